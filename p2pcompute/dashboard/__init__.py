"""The web dashboard every daemon serves on its control API's listener (issue 13).

Files:
    access.py    pure: one-time login tickets, session cookies, the same-origin (CSRF) check
    history.py   pure: members by state over the last hour (a bounded ring), counter rates
    views.py     pure: each page's data from the daemon's state, paged and bounded (the bench feeds it)
    evidence.py  pure: the job page's verification panel: each task's executions, signed evidence, bans
    service.py   DashboardService: the routes, the sampler, server-sent events; api.py asks it about cookies
    synthetic.py members, a job of many tasks, a node serving them: synthetic state for the bench and tests
    browser.py   the system's headless Chromium under Playwright (tests, screenshots, bench)
    static/      index.html, app.js, app.css: plain HTML, CSS and JavaScript (no build step, no CDN)

``p2pcompute dashboard`` (cli/dashboard_cmd.py) prints the login link; docs/dashboard.md shows the pages.
"""
