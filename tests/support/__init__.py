"""Test infrastructure shared by the test suite: real helper servers run as child processes."""
