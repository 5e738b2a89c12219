"""The CSV imports (ladders -> organisation -> users -> history) as a Dagster asset graph.

Module per concern: formats (file layouts), schemas (Pandera models), reader (encoding, chunked
streaming, COPY into staging, reject reports), records (one import record per file), shortcuts
(when an import may trust earlier records; undo and restore take that back), linehash (known lines:
rows already imported recognised by the hash of their line before they are parsed; linestore: the
store's vouching hashes read once per file and looked up in numpy), context (what appends
and merge need of a running stage), one module per stage (ladders, org, users, history),
validations (the seed's post-import checks as SQL), checks / assets / jobs / schedules (the Dagster
side), summaries, sample_data (sample + benchmark).
"""
