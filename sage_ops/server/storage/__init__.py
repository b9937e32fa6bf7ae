"""Every SQL statement, the migrations, the tables, log files and the sealing of secrets at rest.
The bottom layer: it imports no other layer."""
