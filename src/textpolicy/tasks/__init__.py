"""Tasks: prompt sources with graders (``arithmetic`` built in, ``math`` from MATH files)."""
