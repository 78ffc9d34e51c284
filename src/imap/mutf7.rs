//! IMAP's modified UTF-7 (RFC 3501 5.1.3): how a server spells folder
//! names beyond ASCII (`Entwürfe` is `Entw&APw-rfe`), and how isync 1.4
//! wants them too (see [`crate::mbsync::names`]). `&...-` holds UTF-16 in
//! base64 with `,` for `/`; `&-` is a literal `&`.

use base64::Engine;

/// Modified UTF-7 (RFC 3501 5.1.3) of a Unicode folder name.
pub fn encode_mutf7(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut pending: Vec<u16> = Vec::new();
    let flush = |pending: &mut Vec<u16>, out: &mut String| {
        if pending.is_empty() {
            return;
        }
        let bytes: Vec<u8> = pending.iter().flat_map(|u| u.to_be_bytes()).collect();
        let b64 = base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes);
        out.push('&');
        out.push_str(&b64.replace('/', ","));
        out.push('-');
        pending.clear();
    };
    for c in name.chars() {
        if (' '..='~').contains(&c) {
            flush(&mut pending, &mut out);
            if c == '&' {
                out.push_str("&-");
            } else {
                out.push(c);
            }
        } else {
            let mut units = [0u16; 2];
            pending.extend_from_slice(c.encode_utf16(&mut units));
        }
    }
    flush(&mut pending, &mut out);
    out
}

/// Unicode name of a modified UTF-7 folder name; invalid input is returned
/// unchanged (a server may send raw UTF-8).
pub fn decode_mutf7(name: &str) -> String {
    fn decode(name: &str) -> Option<String> {
        let mut out = String::with_capacity(name.len());
        let mut rest = name;
        while let Some(amp) = rest.find('&') {
            out.push_str(&rest[..amp]);
            let after = &rest[amp + 1..];
            let dash = after.find('-')?;
            let b64 = &after[..dash];
            if b64.is_empty() {
                out.push('&');
            } else {
                let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
                    .decode(b64.replace(',', "/"))
                    .ok()?;
                if bytes.len() % 2 != 0 {
                    return None;
                }
                let units: Vec<u16> = bytes
                    .chunks(2)
                    .map(|p| u16::from_be_bytes([p[0], p[1]]))
                    .collect();
                out.push_str(&String::from_utf16(&units).ok()?);
            }
            rest = &after[dash + 1..];
        }
        out.push_str(rest);
        Some(out)
    }
    decode(name).unwrap_or_else(|| name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutf7_round_trip() {
        let cases = [
            ("INBOX", "INBOX"),
            ("Entwürfe", "Entw&APw-rfe"),
            ("Work/Café", "Work/Caf&AOk-"),
            ("a&b", "a&-b"),
            ("日本語", "&ZeVnLIqe-"),
            ("😀", "&2D3eAA-"),
        ];
        for (plain, wire) in cases {
            assert_eq!(encode_mutf7(plain), wire);
            assert_eq!(decode_mutf7(wire), plain);
        }
        assert_eq!(decode_mutf7("bad&"), "bad&");
        assert_eq!(decode_mutf7("A&-B"), "A&B");
        assert_eq!(decode_mutf7("broken&A"), "broken&A");
        assert_eq!(decode_mutf7("bad&*-x"), "bad&*-x");
    }
}
