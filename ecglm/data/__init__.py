"""Stage family 1, the data: download and verify PhysioNet projects (or generate the demo world), read
WFDB records, prepare the records table and the signals store, and measure the 12SL features."""
