//! Operator-edited list files: API keys and blocked target domains.
//!
//! Both the start-up check (`config`) and the running server
//! (`http::access`, again on SIGHUP) read these files, so the parsing lives
//! here, below both, and neither has to import the other.

use std::collections::HashSet;
use std::path::Path;

/// The shortest API or cluster key accepted, in bytes.
pub const MIN_KEY_LEN: usize = 8;

/// True for a key of at least `min` printable ASCII characters, no spaces.
pub fn is_valid_key(key: &str, min: usize) -> bool {
    key.len() >= min && key.bytes().all(|b| b.is_ascii_graphic())
}

/// The keys of an API key file: one per line, `#` starts a comment line.
/// An empty list is a valid answer; what it means is the caller's to say.
pub fn read_api_keys(path: &Path) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let keys: Vec<String> = text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(String::from).collect();
    if let Some(bad) = keys.iter().find(|k| !is_valid_key(k, MIN_KEY_LEN)) {
        return Err(format!(
            "{}: key {:?}… needs at least {MIN_KEY_LEN} printable ASCII characters, no spaces",
            path.display(),
            &bad[..bad.len().min(3)]
        ));
    }
    Ok(keys)
}

/// Domains that links may not point at; a domain blocks its subdomains.
#[derive(Default)]
pub struct Blocklist {
    domains: HashSet<String>,
}

/// Lower case, no trailing dot, IDN in its ASCII (punycode) form.
pub fn normalise_domain(text: &str) -> Option<String> {
    let t = text.trim().trim_end_matches('.');
    if t.is_empty() {
        return None;
    }
    let url = url::Url::parse(&format!("http://{t}/")).ok()?;
    url.host_str().map(|h| h.trim_end_matches('.').to_ascii_lowercase())
}

impl Blocklist {
    pub fn load(path: &Path) -> Result<Blocklist, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut domains = HashSet::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let d = normalise_domain(line).ok_or_else(|| format!("{} line {}: {line:?} is not a domain", path.display(), i + 1))?;
            domains.insert(d);
        }
        Ok(Blocklist { domains })
    }

    pub fn len(&self) -> usize {
        self.domains.len()
    }

    pub fn is_empty(&self) -> bool {
        self.domains.is_empty()
    }

    /// True when `host` or any domain above it is listed.
    pub fn blocks(&self, host: &str) -> bool {
        if self.domains.is_empty() {
            return false;
        }
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let mut rest = host.as_str();
        loop {
            if self.domains.contains(rest) {
                return true;
            }
            match rest.split_once('.') {
                Some((_, parent)) => rest = parent,
                None => return false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocklist_blocks_domains_and_their_subdomains_in_any_form() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("block.txt");
        std::fs::write(&f, "# phishing\nEvil.Example.\nbücher.example\n").unwrap();
        let b = Blocklist::load(&f).unwrap();
        assert!(b.blocks("evil.example"));
        assert!(b.blocks("login.EVIL.example."));
        assert!(b.blocks("xn--bcher-kva.example"));
        assert!(b.blocks("shop.xn--bcher-kva.example"));
        assert!(!b.blocks("notevil.example"));
        assert!(!b.blocks("example"));
    }

    #[test]
    fn a_key_file_of_comments_yields_no_key_and_a_short_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("keys");
        std::fs::write(&f, "# rotated out\n\n").unwrap();
        assert_eq!(read_api_keys(&f).unwrap(), Vec::<String>::new());
        std::fs::write(&f, "# ok\nlong-enough-key\nshort\n").unwrap();
        assert!(read_api_keys(&f).unwrap_err().contains("at least 8"));
    }
}
