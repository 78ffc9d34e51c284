//! OAuth2 providers: Google, Microsoft, generic; client credentials.
