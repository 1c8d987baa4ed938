//! A 2xx or error body from the platform, decoded as the client decodes it
//! (`serde_json::from_slice` into the wire types, `client::body::decode`), then each record of
//! a campaigns page validated as the sync engine does, and the page given to a `Pager`.
//!
//! Invariants: a body that is well-formed JSON but fails to decode is a data error (the client
//! calls it `Contract`, dead-letters the page and moves on) rather than damage (`Malformed`,
//! retried); numbers the platform announces come out finite and non-negative; the pager never
//! keeps more records than the page holds.
#![no_main]

use adsync_domain::{
    Campaign, CampaignId,
    wire::{CampaignPage, ErrorBody, HealthResponse, SyncResponse, TokenResponse},
};
use adsync_fuzz::{Decoded, http::Endpoint};
use adsync_sync::{Pager, PagerLimits};
use libfuzzer_sys::fuzz_target;

fn decode<T: serde::de::DeserializeOwned>(
    data: &[u8],
    endpoint: Endpoint,
    well_formed: bool,
) -> Option<T> {
    match adsync_fuzz::decode::<T>(data, endpoint) {
        Ok(v) => Some(v),
        Err(Decoded::Contract(detail)) => {
            assert!(detail.len() <= 300 + '…'.len_utf8());
            if endpoint == Endpoint::Auth {
                assert!(
                    !detail.contains('"'),
                    "a token answer's error quotes nothing: {detail}"
                );
            }
            None
        }
        Err(Decoded::Malformed(detail)) => {
            assert!(
                !well_formed,
                "well-formed JSON that does not fit is a contract error, not damage: {detail}"
            );
            assert!(detail.len() <= 300 + '…'.len_utf8());
            None
        }
    }
}

/// What the engine's `record_id` extracts: a record's id when it is a usable one.
fn record_id(raw: &serde_json::value::RawValue) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct IdOnly {
        id: Option<serde_json::Value>,
    }
    let id = serde_json::from_str::<IdOnly>(raw.get()).ok()?.id?;
    let id = id.as_str()?;
    CampaignId::parse(id).ok().map(|_| id.to_owned())
}

fuzz_target!(|data: &[u8]| {
    let well_formed = serde_json::from_slice::<serde_json::Value>(data).is_ok();

    // An error body: unreadable ones are the default, as in the client.
    let error: ErrorBody = serde_json::from_slice(data).unwrap_or_default();
    if let Some(secs) = error.retry_after_secs() {
        assert!(secs.is_finite() && secs >= 0.0, "retry_after {secs}");
    }
    let summary = error.summary();
    let message = adsync_fuzz::bounded(&summary, 500);
    assert!(summary.starts_with(message.trim_end_matches('…')));

    if let Some(token) = decode::<TokenResponse>(data, Endpoint::Auth, well_formed)
        && let Some(secs) = token.expires_in_secs()
    {
        assert!(secs.is_finite(), "expires_in {secs}");
    }
    let _ = decode::<SyncResponse>(data, Endpoint::SyncCampaign, well_formed);
    let _ = decode::<HealthResponse>(data, Endpoint::Health, well_formed);

    let Some(page) = decode::<CampaignPage>(data, Endpoint::ListCampaigns, well_formed) else {
        return;
    };
    let ids: Vec<Option<String>> = page.data.iter().map(|r| record_id(r)).collect();
    let id_refs: Vec<Option<&str>> = ids.iter().map(Option::as_deref).collect();
    let mut pager = Pager::new(100, PagerLimits::default());
    let verdict = pager.on_page(&page.pagination, &id_refs);
    assert!(verdict.keep <= page.data.len());
    assert_eq!(verdict.new_to_run.len(), verdict.keep);
    for raw in &page.data[..verdict.keep] {
        let text = raw.get();
        let c = Campaign::from_json_text(text);
        adsync_fuzz::check_campaign(text, &c);
        if let Ok(c) = &c {
            assert!(
                id_refs.contains(&Some(c.id.as_str())),
                "a valid campaign's id is its record's id"
            );
        }
    }
});
