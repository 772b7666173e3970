"""The tenant API's request and answer bodies (``XCreate`` / ``XUpdate`` / ``XPublic``),
one module per area: ``money`` (amounts as exact integers and display decimals),
``partner``, ``keys``, ``customers``, ``admin``.

Money is always an integer in its smallest unit (``ucr`` micro-credits, ``uai`` millionths
of an AI credit) *and* the same amount as exact decimal strings for display (credits,
US dollars at 100 credits = $1): never a float. Times are RFC 3339 date-times in UTC;
ids are opaque strings.
"""
