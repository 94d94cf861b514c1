"""A trained bottleneck at a cut (supervised compression for split computing): a small encoder after the
cut on the phone, an int8 code entropy-coded with zstd on the wire, a decoder before the rest on the edge,
trained by distillation from the original model. ``dnnsplit bottleneck`` runs :func:`run.make_bottleneck`;
:func:`bottleneck_file.load_bottleneck` reads what it wrote."""
