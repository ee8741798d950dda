"""Adapters of the services and providers the trainer calls: the executor, the crawler, Supabase Storage."""
