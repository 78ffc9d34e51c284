//! IDLE watcher: push notification of new mail.
