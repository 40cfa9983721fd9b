"""Generated from proto/ by tools/generate.py; do not edit."""
