//! The rows the store reads and writes.

mod letters;
mod page;
mod run;

pub use letters::{DeadLetter, NewDeadLetter, Resolution, Stage};
pub(crate) use page::DedupedBatch;
pub use page::{PageBatch, PageOutcome, StoredCampaign};
pub use run::{
    Lease, ListingCursor, RunCounters, RunEnd, RunEnding, RunRecord, RunStatus, RunWarning,
    StopReason, StoredWarning,
};
