//! The server bootstrap behind `scimbridge serve`: logging, the data directory, the
//! store, TLS, the SCIM and admin listeners, the control socket, the background
//! tasks (certificate reload, migration mirror, token-use flush), systemd
//! notifications and the graceful shutdown. It wires the edges (`http`, `control`) to
//! the application layer and calls no edge's internals.

use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};

use crate::app::App;
use crate::config::{self, Config, TlsMode};
use crate::control;
use crate::http::{self, AppState};
use crate::localfs;
use crate::store::{Store, StoreError, StoreOptions};
use crate::tls;

/// This machine's host name (Linux), when it is a plausible DNS name.
fn machine_hostname() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    let plausible = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    plausible.then(|| name.to_owned())
}

fn init_logging(cfg: &Config) {
    use tracing_subscriber::EnvFilter;
    let directives = log_directives(std::env::var("SCIMBRIDGE_LOG").ok().as_deref());
    let filter = EnvFilter::try_new(&directives).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = match cfg.log_format {
        config::LogFormat::Json => builder.json().with_writer(std::io::stderr).try_init(),
        // No colours: the escaping writer would escape the formatter's own codes.
        config::LogFormat::Human => builder
            .with_ansi(false)
            .fmt_fields(crate::logline::PlainFields)
            .with_writer(crate::logline::Escaping(std::io::stderr))
            .try_init(),
    };
    if let Err(e) = EnvFilter::try_new(&directives) {
        tracing::warn!("SCIMBRIDGE_LOG={directives:?} is not a log filter ({e}); logging at info");
    }
}

/// The `tracing` filter for `SCIMBRIDGE_LOG` (unset: `info`). A bare level more
/// verbose than `info` (`debug`, `trace`) is scimbridge's own: its modules and the
/// `audit` target log at that level while the libraries (hyper, h2, rustls) stay at
/// `info`, whose debug lines are frame dumps an operator does not want. Anything else
/// (`warn`, `h2=debug`, `info,scimbridge::migrate=trace`) is a filter used as written.
fn log_directives(var: Option<&str>) -> String {
    match var.map(str::trim) {
        None | Some("") => "info".to_owned(),
        Some(level) if ["debug", "trace"].contains(&level.to_ascii_lowercase().as_str()) => {
            let level = level.to_ascii_lowercase();
            format!("info,scimbridge={level},audit={level}")
        }
        Some(filter) => filter.to_owned(),
    }
}

/// Creates or checks the data directory (issue 11's local trust): private modes,
/// our owner, no links. Root is refused on another user's directory: whatever it
/// created there (the database, a certificate) would lock the service out.
fn prepare_data_dir(dir: &Path) -> Result<()> {
    let prepared = localfs::prepare_data_dir(dir, true, localfs::DATA_ENTRIES)
        .with_context(|| format!("the data directory {} is not safe to use", dir.display()))?;
    for t in &prepared.tightened {
        tracing::warn!("{t}: the bridge's files are for its own user only");
    }
    if prepared.trust.hand_over {
        let owner = localfs::user_name(prepared.trust.uid);
        bail!(
            "refusing to serve as root: the data directory {} belongs to {owner}, and files root \
             creates there would stop the service from opening them. Run the server as {owner} \
             (`systemctl start scimbridge`, or `runuser -u {owner} -- scimbridge serve …`)",
            dir.display()
        );
    }
    Ok(())
}

/// Runs the server until SIGTERM or Ctrl-C: opens the store, sets up TLS, binds the
/// listeners and the control socket, starts the background tasks (certificate
/// reload, migration mirror, token-use flush) and drains everything on shutdown.
pub(crate) fn run(cfg: Config) -> Result<()> {
    init_logging(&cfg);
    // The schemas are fixed for the life of the process, before any request is parsed.
    crate::scim::schema::install_extensions(&cfg.scim.extensions).map_err(|e| anyhow!(e))?;
    for ext in &cfg.scim.extensions {
        tracing::info!(
            urn = %ext.urn,
            resource_type = ext.resource_type.name(),
            attributes = ext.attributes.len(),
            "schema extension declared"
        );
    }
    // The listeners are bound before anything is created: a busy port must not leave
    // a new data directory, database or certificate behind (the trial's item 17).
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("scimbridge")
        .build()
        .context("cannot start the async runtime")?;
    let bound = runtime.block_on(Bound::bind(&cfg))?;
    prepare_data_dir(&cfg.data_dir)?;
    let store = open_store(&cfg)?;
    match store.upgraded() {
        Some(u) => tracing::info!(
            "database format {}, upgraded from format {}; the file as it was is kept as {}",
            u.to,
            u.from,
            u.backup.display()
        ),
        None => tracing::info!(
            "database format {}, no upgrade needed",
            crate::store::FORMAT_VERSION
        ),
    }
    for w in cfg.misconfigurations() {
        tracing::warn!("{w}");
    }
    if cfg.tls == TlsMode::Off {
        tracing::warn!(
            "TLS is OFF: SCIM tokens and directory data travel in clear text. Only run this behind a \
             TLS-terminating reverse proxy on a trusted network."
        );
    }
    let (certs, keeper) = tls::start(&cfg)?.unzip();
    let served = store.clone();
    let result = runtime.block_on(async move {
        let store = served;
        let Bound { scim: listener, admin: admin_listener, http01: http01_listener } = bound;
        let local = listener.local_addr()?;
        let acme_mode = matches!(cfg.tls, TlsMode::Acme(_));
        let acceptor = match &certs {
            Some(c) => Some(tokio_rustls::TlsAcceptor::from(Arc::new(tls::server_config(c.clone(), acme_mode)?))),
            None => None,
        };
        let scheme = if certs.is_some() { "https" } else { "http" };
        let origin = public_origin(&cfg, local, scheme);
        let url = format!("{origin}{}", http::SCIM_PREFIX);
        let http01 = match (http01_listener, keeper.as_ref().and_then(|k| k.http01(&cfg))) {
            (Some(l), Some((_, tokens))) => {
                tracing::info!(addr = %l.local_addr()?, "answering ACME HTTP-01 challenges; other plain HTTP requests are redirected to https");
                Some(tokio::spawn(http::acme::serve_http01(l, tokens, local.port(), cfg.public_url.clone())))
            }
            _ => None,
        };
        let reloader = match (&certs, keeper) {
            (Some(c), Some(k)) => Some(tokio::spawn(k.run(c.clone()))),
            _ => None,
        };
        let migration = crate::migrate::service::Migration::new(store.clone(), cfg.migration.clone())
            .map_err(|e| anyhow!(e))?;
        for w in migration.policy_view().map_err(|e| anyhow!(e))?.file_warnings() {
            tracing::warn!("{w}");
        }
        // Behind a reverse proxy (TLS off, a public URL) the README keeps the admin page
        // off the proxy, so its links (first-run setup, the dashboard) name this
        // machine's listener, not the public URL the proxy serves only /scim/v2 at.
        let behind_proxy = certs.is_none() && cfg.public_url.is_some();
        let admin_url = match &admin_listener {
            Some(l) => format!("{scheme}://{}/admin", l.local_addr()?),
            None if behind_proxy => format!("http://{local}/admin"),
            None => format!("{origin}/admin"),
        };
        if behind_proxy && admin_listener.is_none() && cfg.admin.enabled {
            tracing::info!(
                "the admin page is served here, not through public_url: open it on this machine \
                 or through an SSH tunnel (ssh -L {port}:127.0.0.1:{port} THIS_HOST)",
                port = local.port()
            );
        }
        let app = Arc::new(App::new(store.clone(), cfg.clone(), migration.clone()));
        let state = Arc::new(AppState::new(app, certs));
        let mirror = tokio::spawn(crate::migrate::service::run_mirror(migration.clone()));
        if store.snapshot().and_then(|s| s.tokens()).map(|t| t.is_empty()).unwrap_or(false) {
            tracing::info!("no SCIM token yet: run `{} token issue --name <idp>`", cfg.cli_prefix());
        }
        let control_task = match control::bind(&cfg.data_dir) {
            Ok(listener) => {
                let app = state.app.clone();
                let dir = cfg.data_dir.clone();
                Some(tokio::spawn(async move { control::serve(&dir, listener, app).await }))
            }
            Err(e) => {
                tracing::warn!(error = %e, "the control socket is not available; CLI commands need the server stopped");
                None
            }
        };
        tracing::info!(version = crate::version::VERSION, data_dir = %cfg.data_dir.display(), "scimbridge started");
        http::admin::announce(&state, &admin_url, &url).await;
        tracing::info!("SCIM URL for your identity provider: {url}");
        let flusher = spawn_token_use_flusher(state.clone());
        let pruner = spawn_event_pruner(store.clone(), cfg.event_retention);
        #[cfg(unix)]
        crate::sdnotify::notify(&format!("READY=1\nSTATUS=serving {url}"));
        // One signal stops both listeners.
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let admin_server = admin_listener.map(|l| {
            let mut rx = stop_rx.clone();
            tokio::spawn(http::server::run_listener(
                state.clone(),
                l,
                acceptor.clone(),
                async move {
                    let _ = rx.changed().await;
                },
                http::Listener::Admin,
            ))
        });
        http::server::run(state.clone(), listener, acceptor, async move {
            shutdown_signal().await;
            // systemd learns at once that the stop has begun (requests in flight may
            // take up to the drain timeout).
            #[cfg(unix)]
            crate::sdnotify::notify("STOPPING=1");
            let _ = stop_tx.send(true);
        })
        .await;
        if let Some(a) = admin_server {
            let _ = a.await;
        }
        flusher.abort();
        pruner.abort();
        mirror.abort();
        if let Some(r) = reloader {
            r.abort();
        }
        if let Some(h) = http01 {
            h.abort();
        }
        if let Some(t) = control_task {
            t.abort();
        }
        let _ = std::fs::remove_file(control::socket_path(&cfg.data_dir));
        state.app.flush_token_uses().await;
        tracing::info!("scimbridge stopped");
        Ok::<(), anyhow::Error>(())
    });
    store.close();
    result
}

/// The listeners, bound before the data directory is touched.
struct Bound {
    /// The SCIM listener (`listen`), which also serves the admin page unless it has
    /// its own.
    scim: tokio::net::TcpListener,
    /// The admin page's own listener (`admin.listen`), when configured and enabled.
    admin: Option<tokio::net::TcpListener>,
    /// The plain-HTTP listener for ACME HTTP-01 challenges (`tls.acme.http_listen`).
    http01: Option<tokio::net::TcpListener>,
}

impl Bound {
    async fn bind(cfg: &Config) -> Result<Bound> {
        let scim = tokio::net::TcpListener::bind(cfg.listen)
            .await
            .with_context(|| {
                format!(
                    "cannot listen on {}; is another program using it? set --listen",
                    cfg.listen
                )
            })?;
        let admin = match cfg.admin.listen.filter(|_| cfg.admin.enabled) {
            Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.with_context(|| {
                format!("cannot listen on {addr} for the admin page; is another program using it? set --admin-listen")
            })?),
            None => None,
        };
        let http01 = match &cfg.tls {
            TlsMode::Acme(a) => match a.http_listen {
                Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.with_context(|| {
                    format!("cannot listen on {addr} for ACME HTTP-01; is another program using it? set --acme-http-listen")
                })?),
                None => None,
            },
            _ => None,
        };
        Ok(Bound {
            scim,
            admin,
            http01,
        })
    }
}

/// Opens the database with a page cache of `storage.cache_mb`, or one sized from the
/// file and the memory the process may use (`memory::budget`: the machine's, or its
/// cgroup's limit when lower); a database another process holds is named.
fn open_store(cfg: &Config) -> Result<Store> {
    let cache_bytes = cfg.cache_bytes.unwrap_or_else(|| {
        let file = std::fs::metadata(cfg.db_path()).map_or(0, |m| m.len());
        let memory = crate::memory::budget();
        let bytes = crate::store::default_cache_bytes(file, memory.as_ref().map(|m| m.bytes));
        // The cache's size first and alone: the trial read "…memory, 24105 MiB…"
        // as a 24 GiB cache.
        let memory_words = match &memory {
            Some(m) => format!(
                "{} ({} MiB, read from {})",
                m.what,
                m.bytes >> 20,
                m.read_from
            ),
            None => "an assumed 1 GiB of memory (the machine's and the cgroup's could not be read)"
                .to_owned(),
        };
        tracing::info!(
            cache_mb = bytes >> 20,
            database_mb = file >> 20,
            "page cache: {} MiB, sized for a database file of {} MiB: the whole file up to an \
             eighth of {memory_words}, at least 16 MiB and at most 1024 MiB; set storage.cache_mb \
             to choose another size",
            bytes >> 20,
            file >> 20
        );
        bytes
    });
    Store::open(
        &cfg.db_path(),
        &StoreOptions {
            cache_bytes,
            read_ahead: cfg.read_ahead,
        },
    )
    .map_err(|e| match e {
        StoreError::AlreadyOpen(p) => anyhow!(
            "the database {} is already in use: another scimbridge is running with this data directory",
            p.display()
        ),
        other => anyhow!(other),
    })
}

/// The origin (`scheme://host[:port]`) that SCIM answers name in `meta.location`:
/// `public_url`, else the ACME certificate's first name, else the listener's own
/// name — never a request's Host header.
fn public_origin(cfg: &Config, local: std::net::SocketAddr, scheme: &str) -> String {
    match (&cfg.public_url, &cfg.tls) {
        (Some(u), _) => u.clone(),
        (None, TlsMode::Acme(a)) if local.port() == 443 => format!("https://{}", a.domains[0]),
        (None, TlsMode::Acme(a)) => format!("https://{}:{}", a.domains[0], local.port()),
        (None, _) if local.ip().is_unspecified() => {
            let name = machine_hostname().unwrap_or_else(|| local.ip().to_string());
            tracing::warn!(
                "public_url is not set and the listener is {local}: SCIM answers name this machine \
                 ({name}) in meta.location; set public_url to the name identity providers use"
            );
            format!("{scheme}://{name}:{}", local.port())
        }
        (None, _) => format!("{scheme}://{local}"),
    }
}

/// Every 30 s, writes the batched last-use times of tokens to the store.
fn spawn_token_use_flusher(state: Arc<AppState>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(30));
        loop {
            tick.tick().await;
            state.app.flush_token_uses().await;
        }
    })
}

/// Change events are kept by age and count (`[storage] events_*`), from the start
/// and then hourly; the mirror's unsent events are never deleted.
fn spawn_event_pruner(store: Store, keep: config::EventRetention) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(3600));
        loop {
            tick.tick().await;
            loop {
                match store.prune_events(crate::clock::Timestamp::now(), keep.max_age, keep.max_count).await {
                    Ok(0) => break,
                    Ok(n) => tracing::info!(deleted = n, "old change events deleted ([storage] events_max_age_days, events_max_count)"),
                    Err(e) => {
                        tracing::warn!(error = %e, "could not delete old change events; retrying in an hour");
                        break;
                    }
                }
            }
        }
    })
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = tokio::signal::ctrl_c() => tracing::info!("interrupt: shutting down"),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_debug_level_is_scimbridges_own_and_filters_stay_as_written() {
        assert_eq!(log_directives(None), "info");
        assert_eq!(log_directives(Some(" ")), "info");
        assert_eq!(
            log_directives(Some("debug")),
            "info,scimbridge=debug,audit=debug"
        );
        assert_eq!(
            log_directives(Some("TRACE")),
            "info,scimbridge=trace,audit=trace"
        );
        assert_eq!(log_directives(Some("warn")), "warn");
        assert_eq!(log_directives(Some("h2=debug")), "h2=debug");
        assert_eq!(
            log_directives(Some("info,scimbridge::migrate=trace")),
            "info,scimbridge::migrate=trace"
        );
    }
}
