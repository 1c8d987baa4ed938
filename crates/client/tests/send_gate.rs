//! The send gate: a request waits for its task's gate after its limiter slot and before it
//! leaves, so a task whose gate stays shut (a run whose lease is in doubt) sends nothing.

mod common;

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use adsync_client::{SendGate, with_send_gate};
use adsync_domain::CampaignId;
use adsync_sim::{Profile, SimConfig};
use common::*;

struct Switch(AtomicBool);

impl SendGate for Switch {
    fn opened(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            while !self.0.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    }
}

#[tokio::test]
async fn a_shut_gate_holds_the_request_and_an_open_one_lets_it_go() {
    let sim = start_sim(SimConfig::for_profile(Profile::Calm), 60.0).await;
    let client = client_for(&sim);
    let id = CampaignId::parse("campaign_1").unwrap();
    let gate = Arc::new(Switch(AtomicBool::new(false)));

    // Shut: the call waits at the gate, and dropping it (its run stopped) sends nothing.
    let held = tokio::time::timeout(
        Duration::from_millis(300),
        with_send_gate(gate.clone(), client.sync_campaign(&id)),
    )
    .await;
    assert!(held.is_err(), "the call went through a shut gate");
    assert_eq!(
        sim.stats().syncs.get("campaign_1"),
        None,
        "nothing was sent"
    );

    // Open: the same call goes.
    gate.0.store(true, Ordering::SeqCst);
    let done = tokio::time::timeout(
        Duration::from_secs(10),
        with_send_gate(gate.clone(), client.sync_campaign(&id)),
    )
    .await
    .expect("an open gate lets the call go within its deadline");
    assert!(done.is_ok(), "{done:?}");
    assert_eq!(sim.stats().syncs.get("campaign_1"), Some(&1));

    // Without a gate, calls go as before.
    client.sync_campaign(&id).await.unwrap();
    assert_eq!(sim.stats().syncs.get("campaign_1"), Some(&2));
}
