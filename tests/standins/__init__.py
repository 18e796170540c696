"""Stand-ins for systems that cannot run on the test machines.

Each stand-in is as strict as the real system: every rule it enforces is a
small function that names its source (a file and function in the real
project's code, or its documentation), and has a test of its own.
"""
