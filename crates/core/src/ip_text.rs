//! IP addresses written as text without `format!`: the gateway writes the client's address on
//! every request (its session key, `X-Forwarded-For`), and `Display` for an IPv4 address goes
//! through the padding machinery, about 1,300 instructions each time.

use std::fmt::Write;
use std::net::IpAddr;

/// Appends `addr` as `Display` writes it: IPv4 digit by digit, IPv6 through `Display`.
pub fn push_ip(out: &mut String, addr: IpAddr) {
    match addr {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                if octet >= 100 {
                    out.push(char::from(b'0' + octet / 100));
                }
                if octet >= 10 {
                    out.push(char::from(b'0' + octet / 10 % 10));
                }
                out.push(char::from(b'0' + octet % 10));
            }
        }
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_what_display_writes() {
        for text in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.30.40",
            "255.255.255.255",
            "192.168.100.9",
            "::1",
            "2001:db8::8a2e:370:7334",
            "::ffff:1.2.3.4",
        ] {
            let addr: IpAddr = text.parse().unwrap();
            let mut out = String::from("x ");
            push_ip(&mut out, addr);
            assert_eq!(out, format!("x {addr}"));
        }
    }
}
