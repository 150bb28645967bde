"""Who may call what, and how often: API keys and roles (auth), the authentication middleware that
identifies a key (middleware), the route guards that let a role in, keep admin routes to loopback
clients when no keys are configured, and draw on rate-limit buckets (guards, ratelimit), over one
configuration (policy). May import platform, schemas and Litestar; never api, search or the store.
"""
