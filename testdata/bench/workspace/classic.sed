# The classic builder (docker build without BuildKit, all Docker 20.10 has without buildx)
# rejects COPY --chmod: the same result as a COPY and a RUN chmod.
s|^COPY --chmod=755 \([^ ]*\) \([^ ]*\)$|COPY \1 \2\nRUN chmod 755 \2|
