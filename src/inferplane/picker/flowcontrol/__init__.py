"""Flow control (design.md §4): hold requests in the picker while the pool is saturated.

A queue per (fairness id, priority band); strict priority between bands, a fairness policy
between the tenants of a band, an ordering policy inside one tenant's queue. Requests leave when
capacity appears (a request finishing, a scrape), when their time-to-live runs out (503) or when
the client goes away.
"""
