//! The token type and how external tools hand tokens over.
