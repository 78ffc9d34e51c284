//! OAuth2 flows: refresh, authorization code with PKCE, device code.
