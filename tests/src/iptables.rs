//! The iptables rules that test networks leave behind, found by what they mention and deleted
//! (for a test that never ran DEL, and by the reaper for a killed run's networks).

/// Deletes the iptables rules of `table` that mention any of `needles` (what a plugin left
/// when a failed test never ran DEL).
pub fn delete_rules(table: &str, needles: &[&str]) {
    let Ok(out) = std::process::Command::new("iptables")
        .args(["-w", "-t", table, "-S"])
        .output()
    else {
        return;
    };
    for rule in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(spec) = rule.strip_prefix("-A ") else {
            continue;
        };
        if !needles.iter().any(|n| spec.contains(n)) {
            continue;
        }
        let mut args = vec!["-w".to_string(), "-t".into(), table.into(), "-D".into()];
        // iptables -S quotes comments; the shell-less argv needs them unquoted.
        args.extend(shell_words(spec));
        let _ = std::process::Command::new("iptables").args(&args).status();
    }
}

/// Splits an `iptables -S` rule into arguments, honouring double quotes.
fn shell_words(s: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let (mut quoted, mut any) = (false, false);
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            '\\' if quoted => {
                if let Some(next) = chars.next() {
                    word.push(next);
                }
            }
            ' ' if !quoted => {
                if any || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                any = false;
            }
            c => word.push(c),
        }
    }
    if any || !word.is_empty() {
        words.push(word);
    }
    words
}
