//! IMAP connection: TLS, STARTTLS or plain; LOGIN or AUTHENTICATE.
