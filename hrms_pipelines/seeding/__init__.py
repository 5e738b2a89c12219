"""Environment seed data: the fixtures in seeds/fixtures/ as a partitioned asset (one partition per
fixture the deployment's environment loads), a per-fixture asset check, and the seed jobs."""
