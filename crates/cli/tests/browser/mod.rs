//! Headless Chromium driven over WebDriver (Debian's `chromium` and `chromium-driver`, through
//! the `fantoccini` client) for the dashboard's tests: a chromedriver of the test's own on a
//! free port, a fresh profile, a screenshot of every page the test looks at in
//! `target/screenshots/`, and waits that all end at a deadline. Without chromedriver a test is
//! skipped with a line saying so, unless `ADSYNC_BROWSER_TESTS=required` (set by `.ci/run`),
//! where that fails it. Chromedriver and every browser process it started are killed when the
//! [`Browser`] is dropped, also when the test fails.

use std::{
    net::TcpListener,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use fantoccini::{Client, ClientBuilder, Locator, elements::Element, wd::Capabilities};
use serde_json::{Value, json};

use crate::common::TempDir;

/// Debian's chromedriver (package `chromium-driver`).
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// Debian's Chromium (package `chromium`).
const CHROMIUM: &str = "/usr/bin/chromium";

/// How long any one wait in the browser may take: an element to appear, a page to change.
pub const WAIT: Duration = Duration::from_secs(20);
/// How often a condition in the page is checked again.
const POLL: Duration = Duration::from_millis(50);
/// How long chromedriver may take to answer its first `/status`.
const DRIVER_START: Duration = Duration::from_secs(20);

/// The switches of every browser: headless, nothing that reaches the network by itself
/// (background updates, sync, QUIC), one window size so that screenshots compare, and shared
/// memory in /tmp (a container's /dev/shm is often 64 MB, too small for a renderer).
const CHROMIUM_ARGS: [&str; 10] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
    "--window-size=1280,900",
    "--disable-dev-shm-usage",
];

/// Whether the machine has chromedriver. When it has not: under
/// `ADSYNC_BROWSER_TESTS=required` the test fails saying how to install it; otherwise it
/// prints a `SKIPPED` line and this returns `false`.
pub fn available(test: &str) -> bool {
    if Path::new(CHROMEDRIVER).exists() {
        return true;
    }
    let required = std::env::var("ADSYNC_BROWSER_TESTS").is_ok_and(|v| v == "required");
    assert!(
        !required,
        "{test}: {CHROMEDRIVER} is missing and ADSYNC_BROWSER_TESTS=required: run .ci/run, or \
         apt-get install chromium chromium-driver"
    );
    println!(
        "SKIPPED {test}: no {CHROMEDRIVER} (apt-get install chromium chromium-driver, or run \
         .ci/run; ADSYNC_BROWSER_TESTS=required makes this a failure)"
    );
    false
}

/// `target/screenshots` of the workspace, created.
fn screenshot_dir() -> PathBuf {
    let target = option_env!("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let dir = target.join("screenshots");
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    dir
}

/// A port nobody listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free local port")
}

/// Every process whose command line holds `needle` (the profile directory: only the
/// browser processes of one [`Browser`] have it).
pub fn pids_with_arg(needle: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmd| String::from_utf8_lossy(&cmd).contains(needle))
        })
        .collect()
}

/// Sends SIGKILL to each of `targets` (`PID`, or `-PGID` for a process group).
fn kill(targets: &[String]) {
    if targets.is_empty() {
        return;
    }
    let _ = Command::new("kill")
        .arg("-KILL")
        .arg("--")
        .args(targets)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// The last `n` lines of a file, for failure messages.
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<_> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Starts chromedriver on `port`, logging to `log`, in a process group of its own so that
/// [`Browser`]'s drop kills it with every browser it started (they stay in its group).
fn spawn_driver(port: u16, log: &Path) -> Child {
    Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .arg(format!("--log-path={}", log.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("{CHROMEDRIVER} does not start: {e}"))
}

/// A chromedriver of its own and one headless Chromium session in a fresh profile.
pub struct Browser {
    client: Option<Client>,
    driver: Child,
    driver_url: String,
    profile: TempDir,
    test: String,
    shots: PathBuf,
    step: u32,
}

impl Browser {
    /// Starts chromedriver on a free port, waits until it answers (at most [`DRIVER_START`])
    /// and opens a session. Returns `None` when the test is skipped (see [`available`]).
    pub async fn start(test: &str) -> Option<Browser> {
        if !available(test) {
            return None;
        }
        let shots = screenshot_dir();
        // Screenshots of an earlier run of this test would mix with this run's.
        let prefix = format!("{test}-");
        for entry in std::fs::read_dir(&shots).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(&prefix) && name.ends_with(".png") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        let profile = TempDir::new(&format!("browser-{test}"));
        let log = profile.join("chromedriver.log");
        let port = free_port();
        let mut browser = Browser {
            client: None,
            driver: spawn_driver(port, &log),
            driver_url: format!("http://127.0.0.1:{port}"),
            profile,
            test: test.to_owned(),
            shots,
            step: 0,
        };
        // The port is picked here (chromedriver cannot report one it picked), so a port
        // taken in the meantime means trying again on another.
        for attempt in 1..=3 {
            if browser.wait_for_driver().await {
                browser.connect().await;
                return Some(browser);
            }
            assert!(
                attempt < 3,
                "chromedriver never answered on a free port:\n{}",
                tail(&log, 30)
            );
            kill(&[format!("-{}", browser.driver.id())]);
            let _ = browser.driver.wait();
            let port = free_port();
            browser.driver = spawn_driver(port, &log);
            browser.driver_url = format!("http://127.0.0.1:{port}");
        }
        unreachable!()
    }

    /// Waits until chromedriver answers `GET /status` with `ready`; `false` if it exited
    /// first (its port was taken) or did not answer in time.
    async fn wait_for_driver(&mut self) -> bool {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        let deadline = Instant::now() + DRIVER_START;
        while Instant::now() < deadline {
            if self.driver.try_wait().ok().flatten().is_some() {
                return false;
            }
            if let Ok(res) = http.get(format!("{}/status", self.driver_url)).send().await
                && let Ok(body) = res.json::<Value>().await
                && body["value"]["ready"] == true
            {
                return true;
            }
            tokio::time::sleep(POLL).await;
        }
        false
    }

    /// Opens the WebDriver session: Chromium at [`CHROMIUM`] with [`CHROMIUM_ARGS`] and the
    /// profile directory.
    async fn connect(&mut self) {
        let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|a| a.to_string()).collect();
        args.push(format!(
            "--user-data-dir={}",
            self.profile.join("profile").display()
        ));
        let capabilities: Capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": CHROMIUM, "args": args },
            "goog:loggingPrefs": { "browser": "ALL" },
        })
        .as_object()
        .cloned()
        .unwrap();
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let mut builder = ClientBuilder::new(connector);
        builder.capabilities(capabilities);
        let connecting = builder.connect(&self.driver_url);
        let client = tokio::time::timeout(WAIT, connecting)
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no browser session within {WAIT:?}:\n{}",
                    tail(&self.profile.join("chromedriver.log"), 30)
                )
            })
            .unwrap_or_else(|e| {
                panic!(
                    "chromedriver did not start {CHROMIUM}: {e}\n{}",
                    tail(&self.profile.join("chromedriver.log"), 30)
                )
            });
        self.client = Some(client);
    }

    /// The browser's profile directory (on the command line of each of its processes).
    pub fn profile_dir(&self) -> String {
        self.profile.path().display().to_string()
    }

    /// The ids of the processes of this browser still alive (chromedriver's aside).
    pub fn browser_pids(&self) -> Vec<u32> {
        pids_with_arg(&self.profile_dir())
    }

    /// The WebDriver client.
    pub fn client(&self) -> &Client {
        self.client.as_ref().expect("an open session")
    }

    /// Opens `url` and waits for its `body`.
    pub async fn goto(&mut self, url: &str) {
        let went = tokio::time::timeout(WAIT, self.client().goto(url)).await;
        match went {
            Ok(Ok(())) => {}
            Ok(Err(e)) => self.fail(&format!("opening {url}: {e}")).await,
            Err(_) => {
                self.fail(&format!("opening {url}: not within {WAIT:?}"))
                    .await
            }
        }
        self.element("body").await;
    }

    /// Saves a screenshot of the page as `target/screenshots/<test>-<NN>-<step>.png` (the
    /// number keeps the steps in order); returns its path.
    pub async fn screenshot(&mut self, step: &str) -> PathBuf {
        self.step += 1;
        let path = self
            .shots
            .join(format!("{}-{:02}-{step}.png", self.test, self.step));
        match tokio::time::timeout(WAIT, self.client().screenshot()).await {
            Ok(Ok(png)) => std::fs::write(&path, png)
                .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display())),
            Ok(Err(e)) => panic!("screenshot {step}: {e}"),
            Err(_) => panic!("screenshot {step}: not within {WAIT:?}"),
        }
        path
    }

    /// Scrolls the first element matching `css` (waiting for it) to the middle of the window,
    /// and saves a screenshot (see [`Browser::screenshot`]).
    pub async fn screenshot_of(&mut self, css: &str, step: &str) -> PathBuf {
        let e = self.element(css).await;
        let arg = serde_json::to_value(&e).expect("an element is JSON");
        self.js("arguments[0].scrollIntoView({block: 'center'});", vec![arg])
            .await;
        self.screenshot(step).await
    }

    /// Runs `script` (a function body: `return ...`, with `arguments`) in the page.
    pub async fn js(&self, script: &str, args: Vec<Value>) -> Value {
        match tokio::time::timeout(WAIT, self.client().execute(script, args)).await {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => panic!("script failed ({e}): {script}"),
            Err(_) => panic!("script took more than {WAIT:?}: {script}"),
        }
    }

    /// The first element matching `css`, waiting for it (at most [`WAIT`]).
    pub async fn element(&mut self, css: &str) -> Element {
        let found = self
            .client()
            .wait()
            .at_most(WAIT)
            .every(POLL)
            .for_element(Locator::Css(css))
            .await;
        match found {
            Ok(e) => e,
            Err(e) => self.fail(&format!("no {css} within {WAIT:?} ({e})")).await,
        }
    }

    /// Clicks the element matching `css` (waiting for it).
    pub async fn click(&mut self, css: &str) {
        let e = self.element(css).await;
        if let Err(err) = e.click().await {
            self.fail::<()>(&format!("clicking {css}: {err}")).await;
        }
    }

    /// Types `text` into the field matching `css` (waiting for it), replacing its value.
    pub async fn fill(&mut self, css: &str, text: &str) {
        let e = self.element(css).await;
        let typed = async {
            e.clear().await?;
            e.send_keys(text).await
        };
        if let Err(err) = typed.await {
            self.fail::<()>(&format!("typing into {css}: {err}")).await;
        }
    }

    /// Evaluates `script` in the page until it returns something other than `null`, `false`,
    /// `undefined`, `0` or `""`, and returns that; fails naming `what` after [`WAIT`].
    pub async fn until(&mut self, what: &str, script: &str, args: Vec<Value>) -> Value {
        self.until_within(what, WAIT, script, args).await
    }

    /// [`Browser::until`] with a limit of its own.
    pub async fn until_within(
        &mut self,
        what: &str,
        limit: Duration,
        script: &str,
        args: Vec<Value>,
    ) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let v = self.js(script, args.clone()).await;
            let truthy = match &v {
                Value::Null | Value::Bool(false) => false,
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return v;
            }
            if Instant::now() >= deadline {
                self.fail::<()>(&format!("{what}: not within {limit:?} (last: {v})"))
                    .await;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The text of the first element matching `css` (waiting for it), trimmed.
    pub async fn text(&mut self, css: &str) -> String {
        let e = self.element(css).await;
        match e.text().await {
            Ok(t) => t.trim().to_owned(),
            Err(err) => self.fail(&format!("reading {css}: {err}")).await,
        }
    }

    /// What the page wrote to its console (errors, warnings, logs), from chromedriver's log.
    pub async fn console(&self) -> Vec<String> {
        let Ok(Some(session)) = self.client().session_id().await else {
            return Vec::new();
        };
        let Ok(http) = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
        else {
            return Vec::new();
        };
        let url = format!("{}/session/{session}/se/log", self.driver_url);
        let Ok(res) = http
            .post(url)
            .json(&json!({"type": "browser"}))
            .send()
            .await
        else {
            return Vec::new();
        };
        let body: Value = res.json().await.unwrap_or_default();
        body["value"]
            .as_array()
            .map(|entries| {
                entries
                    .iter()
                    .map(|e| format!("{} {}", e["level"], e["message"]))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Fails the test (whatever `T` the caller needed) with `why`, the page's address, the start of its text and its console,
    /// after saving a screenshot of it (`<test>-NN-failed.png`).
    pub async fn fail<T>(&mut self, why: &str) -> T {
        // Before the commands below add themselves to it.
        let driver_log = tail(&self.profile.join("chromedriver.log"), 15);
        let shot = match tokio::time::timeout(WAIT, self.client().screenshot()).await {
            Ok(Ok(png)) => {
                self.step += 1;
                let path = self
                    .shots
                    .join(format!("{}-{:02}-failed.png", self.test, self.step));
                let _ = std::fs::write(&path, png);
                path.display().to_string()
            }
            _ => "(no screenshot)".to_owned(),
        };
        let page = tokio::time::timeout(
            WAIT,
            self.client().execute(
                "return location.href + '\\n' + (document.body ? document.body.innerText : '')",
                vec![],
            ),
        )
        .await;
        let page = match page {
            Ok(Ok(Value::String(s))) => s.chars().take(3000).collect(),
            _ => "(page unreadable)".to_owned(),
        };
        let console = self.console().await.join("\n");
        panic!(
            "{why}\n--- screenshot: {shot}\n--- page:\n{page}\n--- console:\n{console}\n--- chromedriver log, last lines:\n{driver_log}"
        );
    }

    /// Ends the session (chromedriver closes the browser); the processes are killed on drop
    /// anyway.
    pub async fn close(mut self) {
        if let Some(client) = self.client.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), client.close()).await;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The driver's process group holds the browsers it started; anything that left the
        // group still has the profile directory on its command line.
        let mut targets = vec![format!("-{}", self.driver.id())];
        let profile = self.profile.path().display().to_string();
        targets.extend(pids_with_arg(&profile).iter().map(u32::to_string));
        kill(&targets);
        let _ = self.driver.wait();
        // Browsers are not children of the test: give them a moment to be gone before the
        // profile directory is removed.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !pids_with_arg(&profile).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
