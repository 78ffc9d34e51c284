//! Exact folder counts read straight from a Maildir tree.
