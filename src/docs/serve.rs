//! `pipe docs serve`: the generated site over HTTP, on 127.0.0.1 only.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Component, Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Connections answered at once; more wait in `QUEUE`, and past that are closed unanswered, so a client opening
/// thousands of idle connections costs a fixed number of threads.
const WORKERS: usize = 4;
const QUEUE: usize = 64;
/// A connection that sends no complete request line in this time is closed.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest request line and header block read.
const MAX_REQUEST: u64 = 16 << 10;

/// Serves the files under `dir` until the process ends; `ready` is told the bound port (useful with port 0).
pub fn serve(dir: &Path, port: u16, ready: impl FnOnce(u16)) -> anyhow::Result<()> {
    let listener = TcpListener::bind(("127.0.0.1", port)).map_err(|e| match e.kind() {
        std::io::ErrorKind::AddrInUse => anyhow::anyhow!(
            "port {port} on 127.0.0.1 is already in use; pass `--port` with another port, or `--port 0` for any free one"
        ),
        _ => anyhow::anyhow!("cannot listen on 127.0.0.1:{port}: {e}"),
    })?;
    let bound = listener.local_addr().map_or(port, |a| a.port());
    let (send, receive) = sync_channel::<TcpStream>(QUEUE);
    let receive = Arc::new(Mutex::new(receive));
    for n in 0..WORKERS {
        let (dir, receive) = (dir.to_path_buf(), Arc::clone(&receive));
        std::thread::Builder::new().name(format!("pipe-docs-{n}")).spawn(move || worker(&dir, &receive))?;
    }
    ready(bound);
    for stream in listener.incoming().flatten() {
        // A full queue drops the connection (the client sees it closed) rather than growing without bound.
        let _ = send.try_send(stream);
    }
    Ok(())
}

fn worker(dir: &Path, connections: &Mutex<Receiver<TcpStream>>) {
    loop {
        let next = match connections.lock() {
            Ok(receiver) => receiver.recv(),
            Err(_) => return,
        };
        let Ok(stream) = next else { return };
        let _ = answer(dir, stream);
    }
}

/// Reads one request and answers it; every response closes the connection.
fn answer(dir: &Path, stream: TcpStream) -> std::io::Result<()> {
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    stream.set_write_timeout(Some(READ_TIMEOUT))?;
    let mut reader = BufReader::new(std::io::Read::take(stream.try_clone()?, MAX_REQUEST));
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // The headers are read and ignored: nothing pipe serves depends on them.
    let mut header = String::new();
    while reader.read_line(&mut header)? > 2 {
        header.clear();
    }
    let mut parts = request_line.split_whitespace();
    let (method, url) = (parts.next().unwrap_or(""), parts.next().unwrap_or("/"));
    let (status, content_type, body) = match file_for(dir, url) {
        Some(path) if method == "GET" || method == "HEAD" => match std::fs::read(&path) {
            Ok(body) => ("200 OK", content_type(&path), body),
            Err(_) => ("404 Not Found", "text/plain", b"not found".to_vec()),
        },
        Some(_) => ("405 Method Not Allowed", "text/plain", b"method not allowed".to_vec()),
        None => ("404 Not Found", "text/plain", b"not found".to_vec()),
    };
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    if method != "HEAD" {
        stream.write_all(&body)?;
    }
    stream.flush()
}

/// The file a URL path names inside `dir`: `/` is `index.html`; a path leaving `dir` names nothing.
fn file_for(dir: &Path, url: &str) -> Option<PathBuf> {
    let path = url.split(['?', '#']).next().unwrap_or("/").trim_start_matches('/');
    let path = if path.is_empty() { "index.html" } else { path };
    let relative = Path::new(path);
    if !relative.components().all(|c| matches!(c, Component::Normal(_))) {
        return None;
    }
    Some(dir.join(relative))
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json") => "application/json",
        Some("png") => "image/png",
        Some("svg") => "image/svg+xml",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::file_for;

    #[test]
    fn urls_map_inside_the_site_folder_only() {
        let dir = Path::new("/site");
        assert_eq!(file_for(dir, "/").unwrap(), Path::new("/site/index.html"));
        assert_eq!(file_for(dir, "/data.js?x=1").unwrap(), Path::new("/site/data.js"));
        assert!(file_for(dir, "/../etc/passwd").is_none());
        assert!(file_for(dir, "/a/../../b").is_none());
    }
}
