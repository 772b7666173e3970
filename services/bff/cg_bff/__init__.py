"""The portal backend-for-frontend. For now: the portal's placeholder page, health and
metrics; the partner and customer portals build on it."""
