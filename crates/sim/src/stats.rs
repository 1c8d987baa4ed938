//! What the simulator saw, for tests to assert on (`GET /__sim/stats`).

use std::{collections::BTreeMap, net::IpAddr};

use serde::{Deserialize, Serialize};

/// Counters of one `X-Client-ID`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClientStats {
    /// Rate-limited requests received (429s included).
    pub requests: u64,
    /// 429s answered.
    pub rate_limited: u64,
}

/// A snapshot of the simulator's counters.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SimStats {
    /// Requests by endpoint (`auth`, `list`, `sync`, `health`) then outcome (`200`, `401`,
    /// `404`, `429`, `503`, `hang`, `reset`, `truncated`, `wrong_shape`).
    pub requests: BTreeMap<String, BTreeMap<String, u64>>,
    /// Per `X-Client-ID` (`default` when the header is missing).
    pub clients: BTreeMap<String, ClientStats>,
    /// 429s answered, all clients.
    pub rate_limited: u64,
    /// Most `/api` requests in flight at once.
    pub peak_concurrency: u64,
    /// `/api` requests in flight now.
    pub in_flight: u64,
    /// Tokens issued.
    pub tokens_issued: u64,
    /// Successful sync calls per campaign id.
    pub syncs: BTreeMap<String, u64>,
    /// Per campaign id, the addresses its successful sync calls came from (distinct, in the
    /// order first seen; served over a socket only). With workers on separate hosts, a
    /// campaign synced by two workers shows two.
    #[serde(default)]
    pub sync_peers: BTreeMap<String, Vec<IpAddr>>,
    /// Listing calls answered 200 with a well-formed page (the same as
    /// `count("list", "200")`; wrong-shape answers count under `"wrong_shape"`, truncated ones
    /// under `"truncated"`). Scheduled [`Mutation`](crate::Mutation)s count these.
    #[serde(default)]
    pub list_calls_ok: u64,
    /// Well-formed 200 listing answers per page number.
    #[serde(default)]
    pub pages_served: BTreeMap<u64, u64>,
}

impl SimStats {
    /// Requests to `endpoint` that ended in `outcome`.
    pub fn count(&self, endpoint: &str, outcome: &str) -> u64 {
        self.requests
            .get(endpoint)
            .and_then(|m| m.get(outcome))
            .copied()
            .unwrap_or(0)
    }

    /// All requests to `endpoint`.
    pub fn total(&self, endpoint: &str) -> u64 {
        self.requests
            .get(endpoint)
            .map(|m| m.values().sum())
            .unwrap_or(0)
    }
}
