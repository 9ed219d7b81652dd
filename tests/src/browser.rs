//! A small W3C WebDriver client: Debian's headless Chromium driven through chromedriver, for
//! tests that look at the federation view as a person would, and the page-load measurement
//! the view benchmark uses.
//!
//! Needs `/usr/bin/chromium` and `/usr/bin/chromedriver` (`apt-get install chromium
//! chromium-driver`). Everything listens on 127.0.0.1; the browser gets a fresh profile and no
//! network beyond what the test serves.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::{free_addr, wait_for};

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// The key under which WebDriver names an element.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A headless Chromium session; chromedriver and the browser are killed on drop.
pub struct Browser {
    http: reqwest::Client,
    driver_addr: SocketAddr,
    /// `http://ADDR/session/ID`.
    session_url: String,
    session_path: String,
    driver: Child,
    driver_log: PathBuf,
    /// The browser's profile and chromedriver's log; removed after both are gone.
    _dir: tempfile::TempDir,
}

/// An element found by CSS selector.
#[derive(Clone, Debug)]
pub struct Element(String);

impl Browser {
    /// Starts chromedriver on a free loopback port and opens a session with a fresh profile
    /// and a 1600×1000 window.
    pub async fn start() -> Self {
        for tool in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(tool).exists(),
                "{tool} is missing; install it with `apt-get install chromium chromium-driver` (.ci/run does)"
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("vigil-browser-")
            .tempdir()
            .expect("browser temp dir");
        let profile = dir.path().join("profile");
        let driver_log = dir.path().join("chromedriver.log");
        let driver_addr = free_addr();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={}", driver_addr.port()))
            .arg(format!("--log-path={}", driver_log.display()))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group, so that drop can end chromedriver and every browser
            // process it started, whatever state they are in.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {CHROMEDRIVER}: {e}"));
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("HTTP client");
        let base = format!("http://{driver_addr}");
        wait_for("chromedriver to be ready", Duration::from_secs(20), || {
            let (http, url) = (http.clone(), format!("{base}/status"));
            async move {
                let v: Value = http.get(url).send().await.ok()?.json().await.ok()?;
                v["value"]["ready"].as_bool()?.then_some(())
            }
        })
        .await;
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--window-size=1600,1000",
        ]
        .iter()
        .map(|a| (*a).to_owned())
        .chain([format!("--user-data-dir={}", profile.display())])
        .collect::<Vec<_>>();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "pageLoadStrategy": "normal",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
            "goog:loggingPrefs": {"browser": "ALL"},
        }}});
        let mut browser = Self {
            http,
            driver_addr,
            session_url: String::new(),
            session_path: String::new(),
            driver,
            driver_log,
            _dir: dir,
        };
        let created = browser
            .call(
                reqwest::Method::POST,
                &format!("{base}/session"),
                Some(caps),
            )
            .await
            .unwrap_or_else(|e| panic!("opening a Chromium session: {e}"));
        let id = created["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no sessionId in {created}"))
            .to_owned();
        browser.session_path = format!("/session/{id}");
        browser.session_url = format!("{base}/session/{id}");
        browser
            .post(
                "timeouts",
                json!({"script": 60_000, "pageLoad": 60_000, "implicit": 0}),
            )
            .await;
        browser
    }

    /// One WebDriver command; the answer's `value`, or the driver's error and message.
    async fn call(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let mut req = self
            .http
            .request(method.clone(), url)
            .timeout(Duration::from_secs(90));
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| format!("{method} {url}: {e}"))?;
        let status = resp.status();
        let v: Value = resp
            .json()
            .await
            .map_err(|e| format!("{method} {url}: answer is not JSON: {e}"))?;
        let value = v.get("value").cloned().unwrap_or(Value::Null);
        if status.is_success() {
            Ok(value)
        } else {
            Err(format!(
                "{method} {url}: {status} {}: {}",
                value["error"].as_str().unwrap_or("?"),
                value["message"].as_str().unwrap_or_default()
            ))
        }
    }

    async fn try_post(&self, cmd: &str, body: Value) -> Result<Value, String> {
        let url = format!("{}/{cmd}", self.session_url);
        self.call(reqwest::Method::POST, &url, Some(body)).await
    }

    async fn post(&self, cmd: &str, body: Value) -> Value {
        self.try_post(cmd, body)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", self.driver_log_tail()))
    }

    async fn get(&self, cmd: &str) -> Value {
        let url = format!("{}/{cmd}", self.session_url);
        self.call(reqwest::Method::GET, &url, None)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", self.driver_log_tail()))
    }

    /// Opens `url` and returns once its `load` event has fired.
    pub async fn navigate(&self, url: &str) {
        self.post("url", json!({ "url": url })).await;
    }

    /// The current address (with the query string the page keeps there).
    pub async fn url(&self) -> String {
        self.get("url")
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Goes back one history entry, like the browser's back button.
    pub async fn back(&self) {
        self.post("back", json!({})).await;
    }

    /// Runs `script` as a function body (`arguments[0..]` are `args`) and returns what it returns.
    pub async fn try_execute(&self, script: &str, args: &[Value]) -> Result<Value, String> {
        self.try_post("execute/sync", json!({"script": script, "args": args}))
            .await
    }

    pub async fn execute(&self, script: &str, args: &[Value]) -> Value {
        self.try_execute(script, args)
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\nscript: {script}"))
    }

    /// Runs `script` asynchronously: it finishes by calling its last argument with the result.
    pub async fn execute_async(&self, script: &str, args: &[Value]) -> Value {
        self.try_post("execute/async", json!({"script": script, "args": args}))
            .await
            .unwrap_or_else(|e| panic!("async script failed: {e}\nscript: {script}"))
    }

    /// The value of a JavaScript expression.
    pub async fn eval(&self, expr: &str) -> Value {
        self.execute(&format!("return ({expr});"), &[]).await
    }

    /// Evaluates the JavaScript expression `condition` every 50 ms until it is truthy and
    /// returns its value; panics naming `what` after `within`. Script errors (a page still
    /// loading) count as "not yet".
    pub async fn wait_for(&self, what: &str, condition: &str, within: Duration) -> Value {
        let script = format!("return ({condition});");
        let last_error = std::sync::Mutex::new(String::new());
        let found = tokio::time::timeout(
            within,
            wait_for(what, within + Duration::from_secs(1), || async {
                match self.try_execute(&script, &[]).await {
                    Ok(v) if truthy(&v) => Some(v),
                    Ok(v) => {
                        *last_error.lock().unwrap() = format!("last value: {v}");
                        None
                    }
                    Err(e) => {
                        *last_error.lock().unwrap() = e;
                        None
                    }
                }
            }),
        )
        .await;
        match found {
            Ok(v) => v,
            Err(_) => {
                let last = last_error.lock().unwrap().clone();
                panic!(
                    "timed out after {within:?} waiting for {what} ({condition}); {last}\n\
                     at {}\nbrowser console:\n{}",
                    self.url().await,
                    self.console().await.join("\n")
                )
            }
        }
    }

    /// The first element matching a CSS selector, if any.
    pub async fn find(&self, css: &str) -> Option<Element> {
        let v = self
            .try_post("element", json!({"using": "css selector", "value": css}))
            .await
            .ok()?;
        Some(Element(v[ELEMENT_KEY].as_str()?.to_owned()))
    }

    async fn must_find(&self, css: &str) -> Element {
        match self.find(css).await {
            Some(e) => e,
            None => panic!("no element matches {css:?} on {}", self.url().await),
        }
    }

    /// The text a person sees in the first element matching `css` (WebDriver's rendered text).
    pub async fn text(&self, css: &str) -> String {
        let el = self.must_find(css).await;
        self.get(&format!("element/{}/text", el.0))
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Clicks the first element matching `css` with a real mouse click (scrolled into view;
    /// fails if something else covers it).
    pub async fn click(&self, css: &str) {
        let el = self.must_find(css).await;
        self.post(&format!("element/{}/click", el.0), json!({}))
            .await;
    }

    /// Types `text` into the first element matching `css` (a real key sequence).
    pub async fn type_into(&self, css: &str, text: &str) {
        let el = self.must_find(css).await;
        self.post(&format!("element/{}/value", el.0), json!({ "text": text }))
            .await;
    }

    /// Saves a PNG of the window to `path` (folders created).
    pub async fn screenshot(&self, path: &Path) {
        let b64 = self.get("screenshot").await;
        let png = base64_decode(b64.as_str().expect("screenshot is a string"))
            .expect("screenshot is base64");
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("screenshot folder");
        }
        std::fs::write(path, png).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    }

    /// The browser console's messages so far (errors, warnings, logs), each with its level.
    pub async fn console(&self) -> Vec<String> {
        // chromedriver's log endpoint: outside W3C, but the only way to read the console.
        let url = format!("{}/se/log", self.session_url);
        let Ok(v) = self
            .call(
                reqwest::Method::POST,
                &url,
                Some(json!({"type": "browser"})),
            )
            .await
        else {
            return Vec::new();
        };
        v.as_array()
            .map(|entries| {
                entries
                    .iter()
                    .map(|e| {
                        format!(
                            "{} {}",
                            e["level"].as_str().unwrap_or("?"),
                            e["message"].as_str().unwrap_or_default()
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Runs a Chrome DevTools Protocol command through chromedriver.
    pub async fn cdp(&self, cmd: &str, params: Value) -> Value {
        self.post("goog/cdp/execute", json!({"cmd": cmd, "params": params}))
            .await
    }

    /// How long `url` takes from navigation start until the JavaScript expression `ready_js`
    /// is true and the frame showing it has been painted. The condition is checked on every
    /// animation frame by a script installed before the page's own scripts run, so the figure
    /// does not depend on how often the test polls.
    pub async fn page_load(&self, url: &str, ready_js: &str) -> Duration {
        self.navigate("about:blank").await;
        let source = format!(
            "(() => {{ if (location.href === 'about:blank') return;\n\
             const ready = () => {{ try {{ return !!({ready_js}); }} catch (e) {{ return false; }} }};\n\
             const tick = () => ready()\n\
               ? requestAnimationFrame(() => {{ window.__vigilReadyAt = performance.now(); }})\n\
               : requestAnimationFrame(tick);\n\
             requestAnimationFrame(tick); }})();"
        );
        let added = self
            .cdp(
                "Page.addScriptToEvaluateOnNewDocument",
                json!({ "source": source }),
            )
            .await;
        self.navigate(url).await;
        let at = self
            .wait_for(
                &format!("{url} to be ready"),
                "window.__vigilReadyAt",
                Duration::from_secs(60),
            )
            .await;
        self.cdp(
            "Page.removeScriptToEvaluateOnNewDocument",
            json!({ "identifier": added["identifier"] }),
        )
        .await;
        let ms = at.as_f64().expect("a time in milliseconds");
        Duration::from_secs_f64(ms / 1000.0)
    }

    fn driver_log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.driver_log).unwrap_or_default();
        let start = text.len().saturating_sub(4000);
        let start = (start..text.len())
            .find(|i| text.is_char_boundary(*i))
            .unwrap_or(text.len());
        format!("---- chromedriver log (tail) ----\n{}", &text[start..])
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ask chromedriver to close the browser (a blocking request: no runtime here), then
        // end the whole process group whatever is left.
        if !self.session_path.is_empty() {
            delete_blocking(self.driver_addr, &self.session_path);
        }
        let pgid = nix::unistd::Pid::from_raw(i32::try_from(self.driver.id()).expect("pid"));
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        let _ = self.driver.wait();
    }
}

/// A `ready_js` for [`page_load`]: the federation view has drawn a matrix of at least `cells`
/// cells (checks × clusters; a large matrix draws the rows in view, see index.html).
pub fn matrix_ready(cells: usize) -> String {
    format!(
        "Number((document.querySelector('#matrix') || {{dataset: {{}}}}).dataset.cells) >= {cells}"
    )
}

/// Starts a browser, measures one load of `url` until `ready_js` holds (see
/// [`Browser::page_load`]), and closes the browser.
pub async fn page_load(url: &str, ready_js: &str) -> Duration {
    let browser = Browser::start().await;
    browser.page_load(url, ready_js).await
}

fn delete_blocking(addr: SocketAddr, path: &str) {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let request = format!(
        "DELETE {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    if stream.write_all(request.as_bytes()).is_ok() {
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
    }
}

/// JavaScript truthiness of a WebDriver value.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0 && !f.is_nan()),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

/// Standard base64 (screenshots), without pulling in a crate for it.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' | b'\n' | b'\r' => continue,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trip() {
        assert_eq!(base64_decode("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(base64_decode("aGVsbG8hIQ==").unwrap(), b"hello!!");
        assert_eq!(base64_decode("iVBORw0K").unwrap(), b"\x89PNG\r\n");
        assert!(base64_decode("a$b").is_none());
    }
}
