"""`python -m limner.sandbox`: print which isolation layers work here."""
from limner.sandbox.probe import probe

print(probe().describe())
