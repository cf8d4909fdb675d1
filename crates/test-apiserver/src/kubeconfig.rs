//! Kubeconfig rendering: one cluster `test` at the server's URL, context `test`, a dummy user.

/// A kubeconfig document for `url`.
pub(crate) fn render(url: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: {url}
contexts:
- name: test
  context:
    cluster: test
    user: test
    namespace: default
current-context: test
preferences: {{}}
users:
- name: test
  user:
    token: test-token
"
    )
}
