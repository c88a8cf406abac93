"""The C side's binding and what crosses it: the plan, the wire protocol with the init, failure
decoding, host probes.  The only package that imports ``_native``."""
