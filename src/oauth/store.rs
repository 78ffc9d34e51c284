//! Where tokens live: Secret Service, GPG, encrypted file, command, plain file.
