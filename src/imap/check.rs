//! The fast check: STATUS per folder compared with what mbsync last pulled.
