//! The docs site in a real browser: `pipe docs serve` (a real HTTP server on 127.0.0.1) and Debian's headless
//! Chromium, driven over its DevTools pipe. The test clicks a node of the lineage graph and a column of the model
//! page, types a selection, checks what the page shows, that user text stays text, and saves a screenshot under
//! `target/`.

// Chromium is driven over its DevTools pipe on fds 3 and 4, which takes `pipe2` and `dup2` (libc) in the child.
#![allow(unsafe_code)]

mod support;

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{example_project, pipe, repo, text};

const CHROMIUM: &str = "/usr/bin/chromium";

/// A DevTools protocol connection over `--remote-debugging-pipe`: commands in on the browser's fd 3, answers and
/// events out on its fd 4, each message a JSON text ended by a NUL byte.
struct Browser {
    child: Child,
    to_browser: File,
    from_browser: BufReader<File>,
    next_id: u64,
    session: Option<String>,
    _profile: tempfile::TempDir,
}

fn pipe_pair() -> (RawFd, RawFd) {
    let mut fds = [0; 2];
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    (fds[0], fds[1])
}

impl Browser {
    fn launch() -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let (child_reads, parent_writes) = pipe_pair();
        let (parent_reads, child_writes) = pipe_pair();
        let mut command = Command::new(CHROMIUM);
        command
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--remote-debugging-pipe",
                "--window-size=1400,900",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        unsafe {
            command.pre_exec(move || {
                // Out of the way first (either pipe end may already be fd 3 or 4), then onto 3 and 4 without
                // close-on-exec.
                let r = libc::fcntl(child_reads, libc::F_DUPFD, 100);
                let w = libc::fcntl(child_writes, libc::F_DUPFD, 100);
                if r < 0 || w < 0 || libc::dup2(r, 3) < 0 || libc::dup2(w, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().expect("Debian's chromium at /usr/bin/chromium (.ci/run installs it)");
        unsafe {
            libc::close(child_reads);
            libc::close(child_writes);
        }
        let (to_browser, from_browser) =
            unsafe { (File::from_raw_fd(parent_writes), BufReader::new(File::from_raw_fd(parent_reads))) };
        let mut browser = Browser { child, to_browser, from_browser, next_id: 0, session: None, _profile: profile };
        let target = browser.call("Target.createTarget", json!({ "url": "about:blank" }));
        let attached =
            browser.call("Target.attachToTarget", json!({ "targetId": target["targetId"], "flatten": true }));
        browser.session = Some(attached["sessionId"].as_str().unwrap().to_string());
        browser.call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": 1400, "height": 900, "deviceScaleFactor": 1, "mobile": false }),
        );
        browser
    }

    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = &self.session {
            message["sessionId"] = json!(session);
        }
        self.to_browser.write_all(serde_json::to_string(&message).unwrap().as_bytes()).unwrap();
        self.to_browser.write_all(b"\0").unwrap();
        loop {
            let mut raw = Vec::new();
            self.from_browser.read_until(0, &mut raw).unwrap();
            assert!(!raw.is_empty(), "the browser closed its pipe");
            raw.pop();
            let answer: Value = serde_json::from_slice(&raw).unwrap();
            if answer["id"] == json!(id) {
                assert!(answer.get("error").is_none(), "{method}: {answer}");
                return answer["result"].clone();
            }
        }
    }

    /// Evaluates `expression` in the page and returns its value.
    fn eval(&mut self, expression: &str) -> Value {
        let result = self
            .call("Runtime.evaluate", json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }));
        assert!(result.get("exceptionDetails").is_none(), "{expression}: {result}");
        result["result"]["value"].clone()
    }

    fn wait_for(&mut self, expression: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.eval(expression) != json!(true) {
            assert!(Instant::now() < deadline, "timed out waiting for {expression}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A real click (mouse pressed and released through the browser's input pipeline) at the middle of the element
    /// `selector` finds.
    fn click(&mut self, selector: &str) {
        let rect = self.eval(&format!(
            "(() => {{ const e = document.querySelector({selector:?}); e.scrollIntoView({{ block: 'center' }}); const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; }})()"
        ));
        let (x, y) = (rect[0].as_f64().unwrap(), rect[1].as_f64().unwrap());
        for kind in ["mouseMoved", "mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({ "type": kind, "x": x, "y": y, "button": "left", "clickCount": 1 }),
            );
        }
    }

    fn screenshot(&mut self, path: &std::path::Path) {
        use base64::Engine as _;
        let shot = self.call("Page.captureScreenshot", json!({ "format": "png" }));
        let png = base64::engine::general_purpose::STANDARD.decode(shot["data"].as_str().unwrap()).unwrap();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
    }

    fn open(&mut self, url: &str) {
        self.call("Page.navigate", json!({ "url": url }));
        self.wait_for("document.readyState === 'complete' && document.querySelectorAll('#viewport .node').length > 0");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `pipe docs serve --port 0` in `root`; returns the server and its base URL.
fn serve(root: &std::path::Path) -> (Server, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pipe"))
        .args(["docs", "serve", "--port", "0"])
        .current_dir(root)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let url = line.trim().rsplit(' ').next().unwrap().to_string();
    assert!(url.starts_with("http://127.0.0.1:"), "{line}");
    (Server(child), url)
}

fn http_get(url: &str, path: &str) -> String {
    try_http_get(url, path).unwrap()
}

fn try_http_get(url: &str, path: &str) -> std::io::Result<String> {
    let address = url.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = std::net::TcpStream::connect(address)?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response)
}

const PAYLOAD: &str = "<img src=x onerror=\"window.__pwned = 1\"></script><script>window.__pwned = 2</script>";

#[test]
fn the_docs_site_in_a_real_browser() {
    let dir = example_project();
    let root = dir.path();
    // A model whose description and column description try markup and script injection.
    std::fs::write(root.join("models/gold/gld_probe.sql"), "select order_id from {{ ref('slv_orders') }}\n").unwrap();
    std::fs::write(
        root.join("models/gold/probe.yml"),
        format!(
            "models:\n  - name: gld_probe\n    description: '{PAYLOAD}'\n    columns:\n      - name: order_id\n        description: '<b>bold</b>'\n"
        ),
    )
    .unwrap();
    let output = pipe(root, &["build"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));

    let (_server, url) = serve(root);
    assert!(http_get(&url, "/").starts_with("HTTP/1.1 200"), "the page is served");
    assert!(http_get(&url, "/../pipe.yml").starts_with("HTTP/1.1 404"), "nothing outside the site folder");
    let page = std::fs::read_to_string(root.join("target/docs/index.html")).unwrap();
    // Nothing is fetched at view time: one script file beside the page, no links, no requests from the code.
    assert_eq!(page.matches("src=").count(), 1, "only data.js");
    assert!(page.contains("<script src=\"data.js\">"));
    for fetching in ["<link", "fetch(", "XMLHttpRequest", "import(", "url(", "https://"] {
        assert!(!page.contains(fetching), "{fetching}");
    }

    let mut browser = Browser::launch();
    browser.open(&url);
    // Every node is drawn for a project this small.
    assert_eq!(browser.eval("document.querySelectorAll('#viewport .node').length"), json!(16));

    // Clicking a node focuses it: the graph keeps its upstream and downstream, the page is the model's.
    browser.click("#viewport .node[data-id='model.shop.slv_orders']");
    browser.wait_for("document.getElementById('page-title')?.textContent === 'slv_orders'");
    let drawn = browser.eval("[...document.querySelectorAll('#viewport .node')].map(g => g.dataset.id).sort()");
    assert_eq!(
        drawn,
        json!([
            "model.shop.brz_orders",
            "model.shop.gld_customer_lifetime",
            "model.shop.gld_daily_revenue",
            "model.shop.gld_probe",
            "model.shop.gld_revenue_by_region",
            "model.shop.int_orders_enriched",
            "model.shop.slv_orders",
            "source.shop.raw.orders"
        ])
    );
    assert_eq!(
        browser.eval("document.querySelector('#viewport .node.focus').dataset.id"),
        json!("model.shop.slv_orders")
    );
    assert_eq!(browser.eval("document.getElementById('rows-written').textContent"), json!("12"));
    assert_eq!(
        browser.eval("document.getElementById('rows-accounting').textContent"),
        json!("16 read, 2 filtered, 2 deduplicated")
    );
    let sql = browser.eval("document.getElementById('compiled-sql').textContent");
    assert!(sql.as_str().unwrap().contains("bronze.brz_orders"), "{sql}");
    let columns = browser.eval("[...document.querySelectorAll('#columns td.col-name')].map(td => td.textContent)");
    assert_eq!(columns, json!(["order_id", "customer_id", "ordered_at", "status", "amount", "currency", "updated_at"]));

    // Clicking a column shows where it comes from and where it goes, and marks those models in the graph.
    browser.click("#columns tr[data-column='amount'] td.col-name");
    browser.wait_for("!!document.querySelector('#column-lineage ul')");
    let lineage = browser.eval("document.getElementById('column-lineage').textContent");
    let lineage = lineage.as_str().unwrap();
    for expected in
        ["brz_orders.amount", "raw.orders.amount", "gld_daily_revenue.revenue", "gld_customer_lifetime.lifetime_spend"]
    {
        assert!(lineage.contains(expected), "{expected} in {lineage}");
    }
    let marked =
        browser.eval("[...document.querySelectorAll('#viewport .node.column-hit')].map(g => g.dataset.id).sort()");
    assert!(marked.as_array().unwrap().contains(&json!("model.shop.gld_daily_revenue")), "{marked}");
    assert!(!marked.as_array().unwrap().contains(&json!("model.shop.gld_probe")), "{marked}");
    assert!(
        marked.as_array().unwrap().contains(&json!("model.shop.int_orders_enriched")),
        "through the ephemeral: {marked}"
    );
    // Test results of the last build are on the columns.
    let chips = browser
        .eval("[...document.querySelectorAll('#columns tr[data-column=\"order_id\"] .chip')].map(c => c.textContent)");
    assert_eq!(chips, json!(["not_null pass", "unique pass"]));
    let shot = repo().join("target/docs-browser-test.png");
    browser.screenshot(&shot);
    assert!(std::fs::metadata(&shot).unwrap().len() > 10_000);

    // The wheel zooms around the pointer; dragging pans.
    let transform = |b: &mut Browser| b.eval("document.getElementById('viewport').getAttribute('transform')");
    let before = transform(&mut browser);
    browser.call(
        "Input.dispatchMouseEvent",
        json!({ "type": "mouseWheel", "x": 700, "y": 200, "deltaX": 0, "deltaY": -300 }),
    );
    browser.wait_for(&format!("document.getElementById('viewport').getAttribute('transform') !== {before}"));
    let zoomed = transform(&mut browser);
    for (kind, x) in [("mousePressed", 600), ("mouseMoved", 650), ("mouseMoved", 700), ("mouseReleased", 700)] {
        browser.call(
            "Input.dispatchMouseEvent",
            json!({ "type": kind, "x": x, "y": 120, "button": "left", "clickCount": 1 }),
        );
    }
    assert_ne!(transform(&mut browser), zoomed, "panned");

    // The search box filters the list.
    browser.eval(
        "const s = document.getElementById('search'); s.value = 'revenue'; s.dispatchEvent(new Event('input')); true",
    );
    let listed = browser.eval("[...document.querySelectorAll('#list button')].map(b => b.textContent)");
    assert_eq!(listed, json!(["gld_daily_revenue", "gld_revenue_by_region"]));

    // The selection box takes `--select`, with the same result as `pipe ls --select`.
    for selector in ["+gld_funnel", "slv_orders+1", "layer:silver,config.materialized:table", "@slv_customers"] {
        browser.eval(&format!("document.getElementById('select').value = {selector:?}; true"));
        browser.click("#select-form button");
        browser.wait_for(&format!(
            "document.getElementById('graph-info').textContent.startsWith({:?})",
            format!("--select {selector}:")
        ));
        let shown = browser.eval("[...document.querySelectorAll('#viewport .node')].map(g => g.querySelector('title').textContent.split(' ')[1]).sort()");
        let ls = pipe(root, &["ls", "--select", selector]);
        let mut expected: Vec<String> =
            text(&ls.stdout).lines().filter_map(|l| l.split_whitespace().next().map(str::to_string)).collect();
        expected.sort();
        assert_eq!(shown, json!(expected), "{selector}");
    }

    // User text is shown as text: no element from it, no script run.
    browser.call("Page.navigate", json!({ "url": format!("{url}#node=model.shop.gld_probe") }));
    browser.wait_for("document.getElementById('page-title')?.textContent === 'gld_probe'");
    assert_eq!(browser.eval("document.getElementById('description').textContent"), json!(PAYLOAD));
    assert_eq!(browser.eval("document.querySelectorAll('#page img, #page b, #page script').length"), json!(0));
    assert_eq!(browser.eval("typeof window.__pwned"), json!("undefined"));

    // The same site opens from the file system, with nothing fetched.
    browser.open(&format!("file://{}", root.join("target/docs/index.html").display()));
    assert_eq!(browser.eval("document.querySelectorAll('#viewport .node').length"), json!(16));
}

/// At 5,000 models the page draws a part of the graph, never all of it: the project's outputs first, and around a
/// focused node its neighbourhood, as many steps out as fit.
#[test]
fn a_five_thousand_model_site_draws_neighbourhoods() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("models/chain")).unwrap();
    std::fs::write(root.join("pipe.yml"), "name: big\n").unwrap();
    std::fs::write(root.join("models/chain/m00000.sql"), "select 1 as id, 'x' as name\n").unwrap();
    // Each model reads the one before it and the one at half its number: long chains and wide fan-outs.
    for i in 1..5000 {
        let sql = format!(
            "select a.id, b.name from {{{{ ref('m{:05}') }}}} a join {{{{ ref('m{:05}') }}}} b on a.id = b.id\n",
            i - 1,
            i / 2
        );
        std::fs::write(root.join(format!("models/chain/m{i:05}.sql")), sql).unwrap();
    }
    let output = pipe(root, &["docs", "generate"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert!(text(&output.stderr).contains("for 5000 nodes"), "{}", text(&output.stderr));

    let mut browser = Browser::launch();
    browser.open(&format!("file://{}", root.join("target/docs/index.html").display()));
    let drawn = browser.eval("document.querySelectorAll('#viewport .node').length").as_u64().unwrap();
    assert!((1..=400).contains(&drawn), "{drawn}");
    assert!(browser
        .eval("document.getElementById('graph-info').textContent")
        .as_str()
        .unwrap()
        .contains("showing the models nothing reads"));

    browser.call(
        "Page.navigate",
        json!({ "url": format!("file://{}#node=model.big.m02500", root.join("target/docs/index.html").display()) }),
    );
    browser.wait_for("document.getElementById('page-title')?.textContent === 'm02500'");
    let drawn = browser.eval("document.querySelectorAll('#viewport .node').length").as_u64().unwrap();
    assert!((2..=150).contains(&drawn), "{drawn}");
    let info = browser.eval("document.getElementById('graph-info').textContent");
    assert!(info.as_str().unwrap().contains("step(s) around it"), "{info}");
    assert_eq!(browser.eval("document.querySelector('#viewport .node.focus').dataset.id"), json!("model.big.m02500"));
}

/// A client that opens hundreds of connections and sends nothing costs the server a fixed number of threads, and the
/// site answers again once they are gone.
#[test]
fn idle_connections_cost_a_fixed_number_of_threads() {
    let dir = example_project();
    let (server, url) = serve(dir.path());
    let address = url.trim_start_matches("http://").trim_end_matches('/').to_string();
    let idle: Vec<std::net::TcpStream> = (0..300).filter_map(|_| std::net::TcpStream::connect(&address).ok()).collect();
    assert!(idle.len() >= 100, "connections were accepted");
    std::thread::sleep(std::time::Duration::from_millis(500));
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.0.id())).unwrap();
    let threads: usize =
        status.lines().find_map(|l| l.strip_prefix("Threads:")).and_then(|n| n.trim().parse().ok()).unwrap();
    assert!(threads < 40, "{threads} threads for {} idle connections", idle.len());
    drop(idle);
    // The server notices the closed connections as it reaches them: a request may be refused until it has.
    let served = (0..50).any(|_| {
        let ok = try_http_get(&url, "/").is_ok_and(|r| r.starts_with("HTTP/1.1 200"));
        if !ok {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        ok
    });
    assert!(served, "the page is served after the idle clients leave");
}
