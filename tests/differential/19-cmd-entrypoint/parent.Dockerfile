FROM diff/busybox:1
CMD ["parent", "cmd"]
ENTRYPOINT ["/bin/echo"]
