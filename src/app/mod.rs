//! The application layer: the typed operations every edge calls (the admin page, the
//! control socket, the CLI). It knows neither HTTP nor the control wire nor redb; it
//! calls the store's typed API and returns typed results and errors.

pub mod admin;
pub mod tokens;
