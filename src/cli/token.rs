//! `token issue|list|rotate|revoke`: SCIM bearer tokens, rendered from the typed
//! replies. `issue` and `rotate` print the secret alone on stdout (so
//! `TOKEN=$(scimbridge token issue --name x)` works) and its explanation on stderr
//! (`--quiet` leaves the explanation out of either);
//! `revoke` asks first only when stdin is a terminal.

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Result;

use super::local::{request, request_quietly, unexpected};
use super::{confirmed, shell_word, TokenCommand};
use crate::app::tokens::{
    scope_holder, scope_use, IssueRequest, IssuedToken, TokenInfo, TokenState,
};
use crate::config::Config;
use crate::control::wire::{Reply, Request};
use crate::store::Scope;

pub(super) fn run(cfg: &Config, cmd: &TokenCommand) -> Result<ExitCode> {
    match cmd {
        TokenCommand::Issue {
            name,
            read_only,
            expires_in,
            quiet,
        } => {
            let req = Request::TokenIssue(IssueRequest {
                name: name.clone(),
                scope: if *read_only {
                    Scope::ReadOnly
                } else {
                    Scope::ReadWrite
                },
                expires_in_days: *expires_in,
            });
            let t = match request_quietly(cfg, req, &mut |_| {}, *quiet)? {
                Reply::TokenIssued(t) => t,
                other => return Err(unexpected(other)),
            };
            if !quiet {
                eprintln!(
                    "Issued the {} token \"{}\"{}. Copy it now: it is shown only once and stored only as a hash. {}",
                    t.token.scope.as_str(),
                    t.token.name,
                    t.token
                        .expires
                        .map(|e| format!(", expiring {e}"))
                        .unwrap_or_default(),
                    scope_use(t.token.scope)
                );
            }
            warn_cut_over(&t);
            // The one place the CLI shows a secret: the token just issued.
            println!("{}", t.secret.expose());
        }
        TokenCommand::List {
            json,
            name,
            active,
            revoked,
            expired,
        } => {
            let all = match request(cfg, Request::TokenList, &mut |_| {})? {
                Reply::Tokens(t) => t,
                other => return Err(unexpected(other)),
            };
            let filter = ListFilter {
                name: name.as_deref(),
                state: match (active, revoked, expired) {
                    (true, _, _) => Some(StateFilter::Active),
                    (_, true, _) => Some(StateFilter::Revoked),
                    (_, _, true) => Some(StateFilter::Expired),
                    _ => None,
                },
            };
            let tokens: Vec<TokenInfo> = all.iter().filter(|t| filter.keeps(t)).cloned().collect();
            if *json {
                println!("{}", serde_json::to_string_pretty(&tokens)?);
            } else if tokens.is_empty() && !all.is_empty() {
                println!("no token matches ({} in all)", all.len());
            } else {
                print!("{}", table(&tokens));
            }
        }
        TokenCommand::Rotate { name, quiet } => {
            let req = Request::TokenRotate { name: name.clone() };
            let r = match request_quietly(cfg, req, &mut |_| {}, *quiet)? {
                Reply::TokenRotated(r) => r,
                other => return Err(unexpected(other)),
            };
            if !quiet {
                let expiring = r
                    .new
                    .token
                    .expires
                    .map(|e| format!(", expiring {e}"))
                    .unwrap_or_default();
                eprintln!(
                    "Issued a successor of the token \"{}\"{expiring}. Copy it now: it is shown only once. {}",
                    r.new.token.name,
                    old_secret(&r.old)
                );
            }
            warn_cut_over(&r.new);
            // The one other place the CLI shows a secret: the successor just issued.
            println!("{}", r.new.secret.expose());
        }
        TokenCommand::Revoke {
            name,
            superseded,
            yes,
        } => {
            // Only a person at a terminal is asked; scripts stay non-interactive.
            if !*yes
                && std::io::stdin().is_terminal()
                && !confirmed(&revoke_question(name, *superseded))?
            {
                eprintln!("not revoked");
                return Ok(ExitCode::FAILURE);
            }
            let req = Request::TokenRevoke {
                name: name.clone(),
                superseded: *superseded,
            };
            let revoked = match request(cfg, req, &mut |_| {})? {
                Reply::TokenRevoked(t) => t,
                other => return Err(unexpected(other)),
            };
            for t in revoked {
                println!(
                    "revoked the {}token \"{}\" ({})",
                    if t.superseded.is_some() {
                        "superseded "
                    } else {
                        ""
                    },
                    t.name,
                    t.id
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A token issued after the cut-over can only read: said on stderr, even with
/// `--quiet` (a warning, not an explanation), so nobody pastes it into an identity
/// provider expecting writes to work (trial 7 item 20).
fn warn_cut_over(t: &IssuedToken) {
    if let Some(at) = t.cut_over_at {
        eprintln!(
            "scimbridge: warning: this bridge was cut over to hosted provisioning at {at} and \
             refuses every SCIM write (410 Gone): the token \"{}\" can only read here. \
             Provisioning belongs with the hosted service now (`scimbridge migrate status` \
             names it).",
            t.token.name
        );
    }
}

/// What happens to the old secret after `token rotate`, in one sentence: a secret
/// that had expired stays refused (the trial was told it "keeps working"); one that
/// had not keeps working until it is revoked.
fn old_secret(old: &TokenInfo) -> String {
    let last_used = old.last_used.map_or("never".into(), |t| t.to_string());
    match (old.state, old.expires) {
        (TokenState::Expired, Some(expired)) => format!(
            "The old secret expired at {expired} and stays refused (401; last used {last_used}): \
             replace it with the new one in {}. It needs no revoking.",
            scope_holder(old.scope)
        ),
        _ => format!(
            "The old secret keeps working (superseded, last used {last_used}{}) until you revoke it: \
             scimbridge token revoke {} --superseded",
            old.expires
                .map(|e| format!(", expiring {e}"))
                .unwrap_or_default(),
            shell_word(&old.name)
        ),
    }
}

/// The question before `token revoke` at a terminal.
fn revoke_question(name: &str, superseded: bool) -> String {
    if superseded {
        format!(
            "Revoke the superseded secrets of the token \"{name}\"? Whatever still uses one \
             (an identity provider, a reading tool) is refused from its next request. [y/N] "
        )
    } else {
        format!(
            "Revoke the token \"{name}\"? Whatever uses it (an identity provider, a reading tool) \
             is refused from its next request. [y/N] "
        )
    }
}

/// `token list`'s filters: the tokens kept are those that pass both.
struct ListFilter<'a> {
    /// Text the name must contain, compared without regard to case.
    name: Option<&'a str>,
    state: Option<StateFilter>,
}

#[derive(Clone, Copy)]
enum StateFilter {
    /// Still authenticates: active or superseded.
    Active,
    Revoked,
    Expired,
}

impl ListFilter<'_> {
    fn keeps(&self, t: &TokenInfo) -> bool {
        let named = self
            .name
            .is_none_or(|n| t.name.to_lowercase().contains(&n.trim().to_lowercase()));
        let in_state = match self.state {
            None => true,
            Some(StateFilter::Active) => t.state.accepted(),
            Some(StateFilter::Revoked) => t.state == TokenState::Revoked,
            Some(StateFilter::Expired) => t.state == TokenState::Expired,
        };
        named && in_state
    }
}

/// `token list` for a terminal.
fn table(tokens: &[TokenInfo]) -> String {
    if tokens.is_empty() {
        return "no tokens; issue one with: scimbridge token issue --name NAME\n".into();
    }
    let mut out = format!(
        "{:<24} {:<10} {:<10} {:<24} {:<24} {:<24} ID\n",
        "NAME", "SCOPE", "STATE", "CREATED", "LAST USED", "EXPIRES"
    );
    for t in tokens {
        out.push_str(&format!(
            "{:<24} {:<10} {:<10} {:<24} {:<24} {:<24} {}\n",
            t.name,
            t.scope.as_str(),
            t.state.as_str(),
            t.created.to_string(),
            t.last_used.map_or("never".into(), |t| t.to_string()),
            t.expires.map_or("never".into(), |t| t.to_string()),
            t.id
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Timestamp;

    fn token(name: &str, state: TokenState) -> TokenInfo {
        let now = Timestamp::now();
        TokenInfo {
            id: format!("id-{name}"),
            name: name.into(),
            scope: Scope::ReadWrite,
            state,
            created: now,
            last_used: None,
            expires: None,
            revoked: None,
            superseded: None,
            quiet_after_minutes: None,
        }
    }

    fn kept(filter: &ListFilter, tokens: &[TokenInfo]) -> Vec<String> {
        tokens
            .iter()
            .filter(|t| filter.keeps(t))
            .map(|t| t.name.clone())
            .collect()
    }

    #[test]
    fn token_list_filters_by_name_text_and_state() {
        let tokens = [
            token("entra-prod", TokenState::Active),
            token("Entra-old", TokenState::Superseded),
            token("okta", TokenState::Revoked),
            token("entra-test", TokenState::Expired),
        ];
        let by = |name, state| kept(&ListFilter { name, state }, &tokens);
        assert_eq!(by(None, None).len(), 4);
        assert_eq!(
            by(Some(" ENTRA"), None),
            ["entra-prod", "Entra-old", "entra-test"]
        );
        assert_eq!(
            by(None, Some(StateFilter::Active)),
            ["entra-prod", "Entra-old"]
        );
        assert_eq!(by(None, Some(StateFilter::Revoked)), ["okta"]);
        assert_eq!(
            by(Some("entra"), Some(StateFilter::Expired)),
            ["entra-test"]
        );
        assert!(by(Some("okta"), Some(StateFilter::Active)).is_empty());
    }
}
