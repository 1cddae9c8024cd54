//! `pipe docs serve`: the generated site over HTTP, on 127.0.0.1 only.

use std::path::{Component, Path, PathBuf};

/// Serves the files under `dir` until the process ends; `ready` is told the bound port (useful with port 0).
pub fn serve(dir: &Path, port: u16, ready: impl FnOnce(u16)) -> anyhow::Result<()> {
    let server = tiny_http::Server::http(("127.0.0.1", port)).map_err(|e| {
        let text = e.to_string();
        match text.contains("in use") {
            true => anyhow::anyhow!(
                "port {port} on 127.0.0.1 is already in use; pass `--port` with another port, or `--port 0` for any free one"
            ),
            false => anyhow::anyhow!("cannot listen on 127.0.0.1:{port}: {text}"),
        }
    })?;
    let bound = server.server_addr().to_ip().map_or(port, |a| a.port());
    ready(bound);
    for request in server.incoming_requests() {
        let response = match file_for(dir, request.url()) {
            Some(path) if request.method() == &tiny_http::Method::Get => match std::fs::read(&path) {
                Ok(body) => {
                    let header =
                        tiny_http::Header::from_bytes("Content-Type", content_type(&path)).expect("a valid header");
                    tiny_http::Response::from_data(body).with_header(header).boxed()
                }
                Err(_) => tiny_http::Response::from_string("not found").with_status_code(404).boxed(),
            },
            Some(_) => tiny_http::Response::from_string("method not allowed").with_status_code(405).boxed(),
            None => tiny_http::Response::from_string("not found").with_status_code(404).boxed(),
        };
        let _ = request.respond(response);
    }
    Ok(())
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
