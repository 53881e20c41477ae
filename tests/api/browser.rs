//! A real, headless Chromium for the web app's tests, driven over WebDriver
//! (Debian's `chromedriver`, through `fantoccini`), against the `TestApp`
//! server.
//!
//! Elements are found the way assistive technology finds them: by the ARIA
//! role and accessible name Chromium's accessibility tree computes
//! (WebDriver's "Get Computed Role" and "Get Computed Label"), never by CSS
//! class or id. Every step and every wait is bounded and says what it was
//! doing when it gives up. The driver and the browser are killed when the
//! `Browser` is dropped, whether the test passed or panicked.

use std::future::Future;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::actions::{InputSource, KeyAction, KeyActions};
use fantoccini::elements::Element;
use fantoccini::key::Key;
use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::TestApp;

/// The widths every page is looked at in: a small phone and a desktop.
pub const WIDTHS: [u32; 2] = [360, 1280];

/// The longest one WebDriver command may take (starting the browser is one).
const STEP: Duration = Duration::from_secs(30);
/// The longest a page may take to show what a test waits for.
const WAIT: Duration = Duration::from_secs(15);
/// The window's height while a test drives it (a screenshot takes the whole page).
const HEIGHT: u32 = 800;

const INSTALL: &str = "the browser tests need Debian's Chromium and its WebDriver: \
                       `apt-get install chromium chromium-driver` (`.ci/run` installs them)";

/// The first of `candidates` that is a file: a bare name is looked up on `PATH`.
fn program(candidates: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    candidates.iter().find_map(|candidate| {
        if candidate.contains('/') {
            Some(PathBuf::from(candidate)).filter(|p| p.is_file())
        } else {
            std::env::split_paths(&path).map(|dir| dir.join(candidate)).find(|p| p.is_file())
        }
    })
}

/// The driver process (leading its own process group, where Chromium and
/// its helpers run too) and the browser's throwaway folder.
struct Processes {
    driver: Child,
    dir: PathBuf,
    killed: bool,
}

impl Processes {
    /// Kills the driver's whole process group: the browser goes with it.
    fn kill(&mut self) {
        if std::mem::replace(&mut self.killed, true) {
            return;
        }
        // SAFETY: kill(2) on the group this test started (`process_group(0)`),
        // whose leader is not reaped yet: its id cannot have been reused.
        unsafe { libc::kill(-(self.driver.id() as libc::pid_t), libc::SIGKILL) };
        let _ = self.driver.wait();
    }

    /// What the driver logged, for a failure's message.
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("chromedriver.log")).unwrap_or_default()
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts chromedriver on a free port; answers its URL once it accepts
/// connections. Retries when another process took the port first.
fn start_driver(driver: &Path, dir: &Path) -> (Processes, String) {
    for _ in 0..3 {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", dir.join("chromedriver.log").display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("{} does not start ({e}): {INSTALL}", driver.display()));
        let mut processes = Processes { driver: child, dir: dir.to_owned(), killed: false };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return (processes, format!("http://127.0.0.1:{port}"));
            }
            if let Ok(Some(status)) = processes.driver.try_wait() {
                eprintln!("chromedriver exited ({status}) before listening on {port}: {}", processes.log());
                break;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not listen on port {port} within 10s: {}",
                processes.log()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
        drop(processes);
    }
    panic!("chromedriver failed to start three times (see above)");
}

/// `fut`, or a panic naming `what` once `STEP` has passed.
async fn step<T, E: std::fmt::Debug>(what: &str, fut: impl Future<Output = Result<T, E>>) -> T {
    match tokio::time::timeout(STEP, fut).await {
        Ok(Ok(value)) => value,
        Ok(Err(e)) => panic!("browser: {what}: {e:?}"),
        Err(_) => panic!("browser: {what}: no answer within {STEP:?}"),
    }
}

/// Reads one accessibility property Chromium computes for an element:
/// `computedrole` or `computedlabel` (WebDriver §12.4.9 and §12.4.10).
#[derive(Debug)]
struct Computed {
    element: String,
    property: &'static str,
}

impl WebDriverCompatibleCommand for Computed {
    fn endpoint(&self, base: &url::Url, session: Option<&str>) -> Result<url::Url, url::ParseError> {
        let session = session.unwrap_or_default();
        base.join(&format!("session/{session}/element/{}/{}", self.element, self.property))
    }

    fn method_and_body(&self, _: &url::Url) -> (reqwest::Method, Option<String>) {
        (reqwest::Method::GET, None)
    }
}

pub struct Browser {
    client: Client,
    base: String,
    width: u32,
    processes: Processes,
    /// Where the browser saves what it downloads.
    downloads: PathBuf,
}

impl Browser {
    /// A fresh headless Chromium (its own profile, nothing from the network
    /// but `app`), 1280 px wide.
    pub async fn open(app: &TestApp) -> Self {
        let driver = program(&["chromedriver", "/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"])
            .unwrap_or_else(|| panic!("chromedriver not found: {INSTALL}"));
        // Debian's `/usr/bin/chromium` is a wrapper script (it adds flags of
        // its own); the browser proper is /usr/lib/chromium/chromium.
        let chromium = program(&["/usr/lib/chromium/chromium", "chromium", "chromium-browser"])
            .unwrap_or_else(|| panic!("chromium not found: {INSTALL}"));

        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("browser-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let (processes, url) = start_driver(&driver, &dir);
        let profile = dir.join("profile");
        let downloads = dir.join("downloads");
        std::fs::create_dir_all(&downloads).unwrap();
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-crash-reporter",
            "--disable-default-apps",
            "--disable-extensions",
            "--disable-sync",
            "--no-first-run",
            "--no-default-browser-check",
            "--password-store=basic",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
            "--lang=en-US",
            &format!("--window-size={},{HEIGHT}", WIDTHS[1]),
            &format!("--user-data-dir={}", profile.display()),
        ];
        let capabilities = json!({
            "goog:chromeOptions": {
                "binary": chromium,
                "args": args,
                // Saved without asking, where the test reads them.
                "prefs": {
                    "download.default_directory": downloads,
                    "download.prompt_for_download": false,
                    "download.directory_upgrade": true,
                    "safebrowsing.enabled": false,
                },
            },
            "pageLoadStrategy": "normal",
        });
        let Value::Object(capabilities) = capabilities else { unreachable!() };
        let mut builder = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new());
        let connecting = tokio::time::timeout(STEP, builder.capabilities(capabilities).connect(&url)).await;
        let client = match connecting {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => panic!("Chromium ({}) did not start: {e}\n{}", chromium.display(), processes.log()),
            Err(_) => panic!("Chromium ({}) did not start within {STEP:?}\n{}", chromium.display(), processes.log()),
        };
        let mut browser = Self { client, base: app.address.clone(), width: WIDTHS[1], processes, downloads };
        browser.set_width(WIDTHS[1]).await;
        browser
    }

    /// Ends the session (the browser quits), then the driver.
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(5), self.client.clone().close()).await;
        self.processes.kill();
    }

    /// Sizes the window so the page's viewport is `width` CSS px wide.
    pub async fn set_width(&mut self, width: u32) {
        self.width = width;
        self.viewport(width, HEIGHT).await;
    }

    async fn viewport(&self, width: u32, height: u32) {
        let what = format!("resize the window to {width}x{height}");
        step(&what, self.client.set_window_size(width, height)).await;
        // The window's frame (if any) is not the page's: make up for it.
        let inner = self.eval("return [window.innerWidth, window.innerHeight]").await;
        let (w, h) = (inner[0].as_u64().unwrap() as u32, inner[1].as_u64().unwrap() as u32);
        if (w, h) != (width, height) {
            step(&what, self.client.set_window_size(2 * width - w, 2 * height - h)).await;
            let inner = self.eval("return window.innerWidth").await;
            assert_eq!(inner.as_u64(), Some(width.into()), "browser: the page's viewport after {what}");
        }
    }

    /// Runs `script` (a function body) in the page; answers what it returns.
    pub async fn eval(&self, script: &str) -> Value {
        step(&format!("run `{script}`"), self.client.execute(script, vec![])).await
    }

    /// Opens `path` on the app's server and waits for the page to load.
    pub async fn goto(&self, path: &str) {
        step(&format!("open {path}"), self.client.goto(&format!("{}{path}", self.base))).await;
    }

    /// The path of the current address.
    pub async fn path(&self) -> String {
        step("read the address", self.client.current_url()).await.path().to_owned()
    }

    /// The page's text as a person sees it (what is hidden is not in it).
    pub async fn text(&self) -> String {
        self.eval("return document.body.innerText").await.as_str().unwrap_or_default().to_owned()
    }

    /// Waits until `check` answers `Some`, for at most `WAIT`; the panic
    /// says what was awaited and what the page shows at that moment.
    pub async fn wait_until<T, Fut>(&self, what: &str, mut check: impl FnMut() -> Fut) -> T
    where
        Fut: Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(value) = check().await {
                return value;
            }
            if Instant::now() >= deadline {
                panic!(
                    "browser: waited {WAIT:?} for {what}; at {} the page says:\n{}",
                    self.path().await,
                    self.text().await
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the page shows `words`.
    pub async fn wait_for_text(&self, words: &str) {
        self.wait_until(&format!("the page to show {words:?}"), || async {
            self.text().await.contains(words).then_some(())
        })
        .await
    }

    /// Waits until the address's path is `path`.
    pub async fn wait_for_path(&self, path: &str) {
        self.wait_until(&format!("the address to become {path}"), || async {
            (self.path().await == path).then_some(())
        })
        .await
    }

    /// Every element of the page with its computed role and, for those of
    /// `role`, its accessible name.
    async fn accessible(&self, role: &str) -> Vec<(Element, String, Option<String>)> {
        let elements = step("list the page's elements", self.client.find_all(Locator::Css("body *"))).await;
        let mut found = Vec::with_capacity(elements.len());
        for element in elements {
            // An element replaced meanwhile has no role: it is skipped.
            let Some(its_role) = self.computed(&element, "computedrole").await else { continue };
            let name = if its_role == role {
                let Some(name) = self.computed(&element, "computedlabel").await else { continue };
                Some(name)
            } else {
                None
            };
            found.push((element, its_role, name));
        }
        found
    }

    /// Chromium's `computedrole` or `computedlabel` of `element`; `None`
    /// when the element is no longer in the page.
    async fn computed(&self, element: &Element, property: &'static str) -> Option<String> {
        let command = Computed { element: element.element_id().to_string(), property };
        match tokio::time::timeout(STEP, self.client.issue_cmd(command)).await {
            Ok(Ok(Value::String(value))) => Some(value),
            Ok(_) => None,
            Err(_) => panic!("browser: reading an element's {property}: no answer within {STEP:?}"),
        }
    }

    /// The one element with ARIA role `role` and accessible name `name`, as
    /// a screen reader finds it; waits for it to appear. Two such elements
    /// are a failure: a person could not tell them apart.
    pub async fn find_by_role(&self, role: &str, name: &str) -> Element {
        self.find_named(role, &format!("named {name:?}"), |n| n == name).await
    }

    /// The one element of `role` whose accessible name starts with `start`
    /// (for names that hold a time in the browser's own words).
    pub async fn find_by_role_starting(&self, role: &str, start: &str) -> Element {
        self.find_named(role, &format!("named {start:?}…"), |n| n.starts_with(start)).await
    }

    async fn find_named(&self, role: &str, named: &str, matches: impl Fn(&str) -> bool) -> Element {
        let what = format!("a {role} {named}");
        let deadline = Instant::now() + WAIT;
        loop {
            let page = self.accessible(role).await;
            let mut matching: Vec<Element> =
                page.iter().filter(|(_, _, n)| n.as_deref().is_some_and(&matches)).map(|(e, _, _)| e.clone()).collect();
            assert!(matching.len() < 2, "browser: {} elements are {what}", matching.len());
            if let Some(element) = matching.pop() {
                return element;
            }
            if Instant::now() >= deadline {
                let of_role: Vec<&str> = page.iter().filter_map(|(_, _, n)| n.as_deref()).collect();
                let named = page.iter().filter(|(_, r, _)| !matches!(r.as_str(), "generic" | "none" | "paragraph"));
                let roles: Vec<&str> = named.map(|(_, r, _)| r.as_str()).collect();
                panic!(
                    "browser: waited {WAIT:?} for {what} at {}; the {role}s are named {of_role:?}; roles on the page: {roles:?}",
                    self.path().await
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Presses and releases one key (a `fantoccini::key::Key`), wherever
    /// the focus is, as a keyboard would.
    pub async fn press(&self, key: Key) {
        let code = char::from(key);
        let keys = KeyActions::new("keyboard".into())
            .then(KeyAction::Down { value: code })
            .then(KeyAction::Up { value: code });
        step(&format!("press {key:?}"), self.client.perform_actions(keys)).await;
    }

    /// Moves the focus with Tab alone until it is on the element of `role`
    /// named `name`, and checks that a person can see where it is (an
    /// outline). Fails when Tab never gets there.
    pub async fn tab_to(&self, role: &str, name: &str) {
        const MOST: usize = 80;
        for _ in 0..MOST {
            self.press(Key::Tab).await;
            let focused = step("read the focused element", self.client.active_element()).await;
            if self.computed(&focused, "computedrole").await.as_deref() == Some(role)
                && self.computed(&focused, "computedlabel").await.as_deref() == Some(name)
            {
                let visible = self
                    .eval(
                        "const s = getComputedStyle(document.activeElement); \
                         return s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) >= 2",
                    )
                    .await;
                assert_eq!(visible, true, "browser: the focus on the {role} {name:?} is not visible");
                return;
            }
        }
        panic!("browser: {MOST} presses of Tab never reached a {role} named {name:?}");
    }

    /// The bytes of `name` once the browser has saved it whole in its
    /// downloads folder (Chromium writes a `.crdownload` and renames it at
    /// the end), waiting at most `within`.
    pub async fn downloaded(&self, name: &str, within: Duration) -> Vec<u8> {
        let file = self.downloads.join(name);
        let deadline = Instant::now() + within;
        loop {
            if let Ok(bytes) = std::fs::read(&file) {
                return bytes;
            }
            if Instant::now() >= deadline {
                let there: Vec<String> = std::fs::read_dir(&self.downloads)
                    .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
                    .unwrap_or_default();
                panic!(
                    "browser: {name} was not saved within {within:?}; the downloads folder holds {there:?}; the page says:\n{}",
                    self.text().await
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Clicks the element of `role` named `name`.
    pub async fn click(&self, role: &str, name: &str) {
        let element = self.find_by_role(role, name).await;
        step(&format!("click the {role} {name:?}"), element.click()).await;
    }

    /// Types `value` into the text field whose accessible name (its label) is `label`.
    pub async fn fill_by_label(&self, label: &str, value: &str) {
        let field = self.find_by_role("textbox", label).await;
        step(&format!("clear the field {label:?}"), field.clear()).await;
        step(&format!("type into the field {label:?}"), field.send_keys(value)).await;
    }

    /// Saves the whole page, at the current width, to
    /// `target/screenshots/<name>-<width>.png` for a person to look at.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let height = self.eval("return document.documentElement.scrollHeight").await.as_u64().unwrap_or(0) as u32;
        self.viewport(self.width, height.max(HEIGHT)).await;
        let png = step(&format!("take the screenshot {name}"), self.client.screenshot()).await;
        self.viewport(self.width, HEIGHT).await;
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().unwrap().join("screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join(format!("{name}-{}.png", self.width));
        std::fs::write(&file, png).unwrap();
        file
    }

    /// Screenshots of the page at each of `WIDTHS`, ending at the width it was.
    pub async fn screenshots(&mut self, name: &str) {
        let was = self.width;
        for width in WIDTHS {
            self.set_width(width).await;
            self.screenshot(name).await;
        }
        self.set_width(was).await;
    }
}
