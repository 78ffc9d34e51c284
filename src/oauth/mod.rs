//! OAuth2 tokens: storage, providers, flows and refresh.

pub mod flow;
pub mod provider;
pub mod store;
pub mod token;
