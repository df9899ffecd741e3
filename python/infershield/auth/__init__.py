"""Access control: API keys and tenants (keys), who may call what (access), TLS (tls)."""
