//! One campaign record as the platform sends it, through `Campaign::from_json_text` (what
//! the sync engine calls on every record of a page), and `Campaign::from_json` on the same
//! value, which must agree.
#![no_main]

use adsync_domain::Campaign;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let verdict = Campaign::from_json_text(text);
    adsync_fuzz::check_campaign(text, &verdict);
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(text) {
        let again = Campaign::from_json(&value);
        match (&verdict, &again) {
            (Ok(a), Ok(b)) => {
                let strip = |c: &Campaign| Campaign {
                    raw: String::new(),
                    ..c.clone()
                };
                assert_eq!(strip(a), strip(b), "from_json and from_json_text agree");
            }
            (Err(a), Err(b)) => assert_eq!(a.reason, b.reason),
            _ => panic!("from_json_text {verdict:?} but from_json {again:?}"),
        }
    } else {
        assert!(verdict.is_err(), "text that is not JSON is not a campaign");
    }
});
