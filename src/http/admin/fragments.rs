//! Small pieces every admin page module shares (`pages.rs`, `liveness.rs`): how a
//! time is written and the CSRF field of a form. Pure text; knows nothing of the
//! pages that use them.

use maud::{html, Markup};

/// An RFC 3339 time (text or `Timestamp`) as `YYYY-MM-DD HH:MM:SS UTC`.
pub(crate) fn when(t: impl std::fmt::Display) -> String {
    let t = t.to_string().replacen('T', " ", 1);
    let t = match t.find('.') {
        Some(i) => t[..i].to_owned(),
        None => t.trim_end_matches('Z').to_owned(),
    };
    format!("{} UTC", t.trim_end_matches('Z'))
}

/// The hidden field every state-changing form carries.
pub(crate) fn csrf_field(csrf: &str) -> Markup {
    html! { input type="hidden" name="csrf" value=(csrf); }
}
