//! What CNI plugins and libcni's cache hand dockpod: a plugin's result of any CNI version
//! (whose IPs become the pod's), a failed plugin's error JSON or stderr, an attachment record
//! in dockpod's or libcni's format, versions, and the bandwidth quantities of a pod's
//! annotations.
//!
//! Promises checked: the pod's IPs are addresses, IPv4 first, without repeats; an error
//! message is bounded whatever the plugin printed; a record read writes back to a record that
//! reads the same; a quantity is a whole number.
#![no_main]

use std::net::IpAddr;

use libfuzzer_sys::fuzz_target;
use pod_shim::cni::{
    parse_attachment, parse_quantity, plugin_error, result_ips, version_at_least, PLUGIN_WORDS,
};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 4 {
        0 => {
            let Ok(result) = serde_json::from_slice(rest) else {
                return;
            };
            let ips = result_ips(&result);
            let parsed: Vec<IpAddr> = ips
                .iter()
                .map(|ip| ip.parse().expect("an address"))
                .collect();
            assert!(parsed.windows(2).all(|w| w[0] != w[1]));
            assert!(parsed
                .windows(2)
                .all(|w| !(w[0].is_ipv6() && w[1].is_ipv4())));
        }
        1 => {
            let (stdout, stderr) = rest.split_at(rest.len() / 2);
            let message = plugin_error("bridge", "ADD", stdout, stderr);
            // Two cut parts of the plugin's words, and our own words around them.
            assert!(message.chars().count() <= 2 * PLUGIN_WORDS + 100);
        }
        2 => {
            if let Ok(attachment) = parse_attachment(rest) {
                let written = serde_json::to_vec(&attachment).expect("a record writes");
                let again = parse_attachment(&written).expect("a written record reads");
                assert_eq!(
                    serde_json::to_value(&attachment).expect("value"),
                    serde_json::to_value(&again).expect("value")
                );
            }
        }
        _ => {
            let text = String::from_utf8_lossy(rest);
            let _ = parse_quantity(&text);
            let _ = version_at_least(&text, (0, 4, 0));
        }
    }
});
