//! `GET /`: the playground page is served, has its controls, and loads nothing from elsewhere.
//! The long tier (`scripts/browser-test.sh`) drives it in a real browser.

use reqwest::header::HeaderMap;

use super::helpers::spawn_app;

/// `GET /`: status, headers and the page.
async fn page() -> (u16, HeaderMap, String) {
    let app = spawn_app().await;
    let response = app.get("/", None).await;
    let (status, headers) = (response.status().as_u16(), response.headers().clone());
    (status, headers, response.text().await.unwrap())
}

#[tokio::test]
async fn the_playground_is_served_as_html_with_its_controls() {
    let (status, headers, page) = page().await;
    let [content_type, csp] =
        ["content-type", "content-security-policy"].map(|name| headers[name].to_str().unwrap());
    assert_eq!(status, 200);
    assert!(content_type.starts_with("text/html"), "{content_type}");
    assert!(
        csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"),
        "{csp}"
    );
    for control in [
        "<textarea id=\"code\"",
        "<textarea id=\"data\"",
        "<select id=\"runtime\"",
        "fetch(\"/runtimes\")",
        "<input id=\"api-key\" type=\"password\"",
        "<button id=\"run\"",
        "id=\"result\"",
        "id=\"stdout\"",
        "id=\"stderr\"",
        "id=\"error-summary\"",
        "id=\"error-line\"",
        "id=\"error-traceback\"",
        "id=\"fuel\"",
        "id=\"duration\"",
        "id=\"executions-left\"",
    ] {
        assert!(page.contains(control), "no {control:?}");
    }
    for id in ["api-key", "code", "data"] {
        assert!(
            page.contains(&format!("<label for=\"{id}\">")),
            "{id} unlabelled"
        );
    }
    // The key is kept in local storage and sent in the header, never in a URL.
    assert!(page.contains("localStorage.setItem"));
    assert!(page.contains("post(\"/execute\", key, body)"));
    assert!(page.contains("\"X-API-Key\": key"));
    assert!(!page.contains("?key=") && !page.contains("location.hash"));
}

#[tokio::test]
async fn the_playground_references_no_external_url() {
    let (_, _, page) = page().await;
    for scheme in ["http://", "https://", "ws://", "wss://", "ftp://"] {
        assert!(!page.contains(scheme), "{scheme} in the page");
    }
    assert_eq!(external_references(&page), Vec::<String>::new());
}

#[test]
fn the_external_reference_check_finds_each_kind() {
    let page = r#"<script src="https://cdn.example/x.js"></script>
        <link rel=stylesheet href='//fonts.example/css'>
        <style>@import url( "//x.example/a.css"); b { background: url(/local.png) }</style>
        <form action="//evil.example/">
        <script>import("//m.example/m.js"); fetch('/execute'); import y from "//n.example/n.js"</script>
        <a href="/openapi.json">"#;
    assert_eq!(
        external_references(page),
        [
            "https://cdn.example/x.js",
            "//fonts.example/css",
            "//evil.example/",
            "//x.example/a.css",
            "//m.example/m.js",
            "//n.example/n.js",
        ]
    );
}

/// URLs after `src=`, `href=`, `action=`, `url(`, `import` or `from` that leave the page's
/// origin: absolute or protocol-relative (`//host/…`).
fn external_references(page: &str) -> Vec<String> {
    let mut found = Vec::new();
    for marker in ["src=", "href=", "action=", "url(", "import", "from"] {
        for (at, _) in page.match_indices(marker) {
            let value = page[at + marker.len()..]
                .trim_start_matches(|c: char| c.is_whitespace() || "\"'(".contains(c));
            let url: String = value
                .chars()
                .take_while(|c| !c.is_whitespace() && !"\"')>;".contains(*c))
                .collect();
            if url.starts_with("//") || url.contains("://") {
                found.push(url);
            }
        }
    }
    found
}
