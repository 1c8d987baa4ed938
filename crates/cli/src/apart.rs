//! Work on a runtime of its own. `adsync serve` runs its workers apart from the API: a
//! thousand runs are tens of thousands of ready tasks, and on one runtime every API request
//! queued behind them (p99 35-61 ms under a 1,000-tenant bench, 9-13 ms apart; the runs took
//! as long either way). On threads of their own the operating system, not tokio's queue,
//! shares the cores, and the API's mostly idle threads get one as soon as a request comes.

use std::future::Future;

use tokio::sync::oneshot;

/// The outcome of work started by [`on_own_runtime`].
pub struct Apart<T> {
    done: oneshot::Receiver<T>,
}

impl<T> Apart<T> {
    /// Waits until the work ended. An error when it panicked (its thread's panic message was
    /// printed).
    pub async fn join(self) -> anyhow::Result<T> {
        self.done.await.map_err(|_| {
            anyhow::anyhow!("a runtime of its own ended without an outcome (its work panicked)")
        })
    }
}

/// Runs `work` to its end on a new multi-threaded runtime (as many threads as the process's
/// main one) on a thread named `name`. Whatever `work` opens (database connections, sockets)
/// belongs to that runtime, so it should open them itself, and close them before it returns.
pub fn on_own_runtime<T, F>(name: &str, work: F) -> std::io::Result<Apart<T>>
where
    T: Send + 'static,
    F: Future<Output = T> + Send + 'static,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_name(name)
        .enable_all()
        .build()?;
    let (tx, done) = oneshot::channel();
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            let out = runtime.block_on(work);
            // Ignored when nobody waits any more (the process is ending).
            let _ = tx.send(out);
        })?;
    Ok(Apart { done })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_work_runs_on_other_threads_and_its_outcome_comes_back() {
        let here = std::thread::current().id();

        let apart = on_own_runtime("adsync-test", async move {
            let there = std::thread::current().id();
            // The runtime works: a timer and a spawned task.
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            let spawned = tokio::spawn(async { 41 + 1 }).await.unwrap();
            (there, spawned)
        })
        .unwrap();
        let (there, spawned) =
            tokio::time::timeout(std::time::Duration::from_secs(10), apart.join())
                .await
                .expect("the work ended")
                .unwrap();

        assert_ne!(there, here);
        assert_eq!(spawned, 42);
    }

    fn boom() {
        panic!("on purpose")
    }

    #[tokio::test]
    async fn a_panic_is_an_error_not_a_hang() {
        let apart = on_own_runtime("adsync-test", async { boom() }).unwrap();

        let outcome: anyhow::Result<()> =
            tokio::time::timeout(std::time::Duration::from_secs(10), apart.join())
                .await
                .expect("the join ended");

        assert!(outcome.is_err());
    }
}
