//! What a User-Agent is: a bot, or a person's device, browser and OS.
//!
//! Bots first: a list of link-preview agents and crawlers (the agents that
//! fetch a link when it is pasted into a chat or a feed, and the search
//! engines), then woothee's crawler category, then the marks most other
//! crawlers carry (`bot/`, `crawler`, `spider`, a `+http` contact URL).
//! Everything else goes to woothee (a maintained pattern set) for device,
//! browser and OS, mapped to the families the stats API shows.

use compact_str::CompactString;

/// Link-preview agents and crawlers, matched case-insensitively anywhere
/// in the User-Agent.
pub const KNOWN_BOTS: &[&str] = &[
    "slackbot",
    "slack-imgproxy",
    "facebookexternalhit",
    "facebookcatalog",
    "meta-externalagent",
    "twitterbot",
    "discordbot",
    "telegrambot",
    "linkedinbot",
    "whatsapp",
    "googlebot",
    "google-inspectiontool",
    "googleother",
    "adsbot-google",
    "mediapartners-google",
    "bingbot",
    "bingpreview",
    "msnbot",
    "applebot",
    "duckduckbot",
    "yandexbot",
    "baiduspider",
    "pinterestbot",
    "redditbot",
    "skypeuripreview",
    "microsoftpreview",
    "embedly",
    "iframely",
    "vkshare",
    "quora link preview",
    "mastodon",
    "bluesky",
    "cardyb",
    "line-poker",
    "zoominfobot",
    "petalbot",
    "semrushbot",
    "ahrefsbot",
    "mj12bot",
    "dotbot",
    "bytespider",
    "gptbot",
    "chatgpt-user",
    "claudebot",
    "perplexitybot",
    "amazonbot",
    "headlesschrome",
];

/// Marks most other automated agents carry.
const BOT_MARKS: &[&str] = &["bot/", "bot;", "bot)", "crawler", "spider", "+http"];

/// User-Agents are looked at up to this many bytes.
pub const MAX_AGENT: usize = 512;

/// True for a known bot or crawler. Allocates nothing (the hot path calls
/// it for links with a click limit).
pub fn is_bot(agent: &[u8]) -> bool {
    let mut buf = [0u8; MAX_AGENT];
    let n = agent.len().min(MAX_AGENT);
    for (d, s) in buf.iter_mut().zip(&agent[..n]) {
        *d = s.to_ascii_lowercase();
    }
    let lower = &buf[..n];
    let has = |needle: &str| lower.windows(needle.len()).any(|w| w == needle.as_bytes());
    KNOWN_BOTS.iter().chain(BOT_MARKS).any(|b| has(b)) || woothee_crawler(agent)
}

fn woothee_crawler(agent: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(agent) else { return false };
    woothee::parser::Parser::new().parse(text).is_some_and(|r| r.category == "crawler")
}

/// A person's agent, as the dimensions count it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Agent {
    pub bot: bool,
    /// `desktop`, `mobile`, `tablet` or `other`.
    pub device: &'static str,
    pub browser: CompactString,
    pub os: CompactString,
}

pub fn classify(parser: &woothee::parser::Parser, agent: &[u8]) -> Agent {
    let agent = &agent[..agent.len().min(MAX_AGENT)];
    let text = String::from_utf8_lossy(agent);
    if is_bot(agent) {
        return Agent { bot: true, device: "other", browser: "bot".into(), os: "Other".into() };
    }
    let Some(r) = parser.parse(&text) else {
        return Agent { bot: false, device: "other", browser: "Other".into(), os: "Other".into() };
    };
    let os = os_family(r.os);
    let tablet = r.os == "iPad" || (os == "Android" && !text.contains("Mobile")) || text.contains("Tablet");
    let device = match r.category {
        _ if tablet => "tablet",
        "pc" => "desktop",
        "smartphone" | "mobilephone" => "mobile",
        _ => "other",
    };
    let browser = match r.name {
        "Safari" if os == "iOS" => "Mobile Safari",
        "UNKNOWN" => "Other",
        name => name,
    };
    Agent { bot: false, device, browser: browser.into(), os: os.into() }
}

fn os_family(os: &str) -> &str {
    match os {
        o if o.starts_with("Windows") => "Windows",
        "Mac OSX" | "Mac OS X" | "Macintosh" => "macOS",
        "iPhone" | "iPad" | "iPod" | "iOS" => "iOS",
        "ChromeOS" => "Chrome OS",
        "UNKNOWN" => "Other",
        o => o,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHROME_WINDOWS: &str =
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36";
    const SAFARI_IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1";
    const FIREFOX_LINUX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0";
    const EDGE_MAC: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.51";
    const IPAD: &str =
        "Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1";
    const ANDROID: &str =
        "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36";

    #[test]
    fn people_by_device_browser_and_os() {
        let p = woothee::parser::Parser::new();
        let got = |ua: &str| {
            let a = classify(&p, ua.as_bytes());
            assert!(!a.bot, "{ua}");
            (a.device, a.browser.to_string(), a.os.to_string())
        };
        assert_eq!(got(CHROME_WINDOWS), ("desktop", "Chrome".into(), "Windows".into()));
        assert_eq!(got(SAFARI_IPHONE), ("mobile", "Mobile Safari".into(), "iOS".into()));
        assert_eq!(got(FIREFOX_LINUX), ("desktop", "Firefox".into(), "Linux".into()));
        assert_eq!(got(EDGE_MAC), ("desktop", "Edge".into(), "macOS".into()));
        assert_eq!(got(IPAD).0, "tablet");
        assert_eq!(got(ANDROID), ("mobile", "Chrome".into(), "Android".into()));
        assert_eq!(got("").0, "other");
    }

    #[test]
    fn preview_agents_and_crawlers_are_bots() {
        for ua in [
            "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
            "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
            "Twitterbot/1.0",
            "Mozilla/5.0 (compatible; Discordbot/2.0; +https://discordapp.com)",
            "TelegramBot (like TwitterBot)",
            "LinkedInBot/1.0 (compatible; Mozilla/5.0; Apache-HttpClient +http://www.linkedin.com)",
            "WhatsApp/2.23.20.0 A",
            "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
            "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
        ] {
            assert!(is_bot(ua.as_bytes()), "{ua}");
        }
        for ua in [CHROME_WINDOWS, SAFARI_IPHONE, FIREFOX_LINUX, ANDROID, "Mozilla/5.0 (Linux; Android 12; CUBOT X50) Mobile"] {
            assert!(!is_bot(ua.as_bytes()), "{ua}");
        }
    }
}
