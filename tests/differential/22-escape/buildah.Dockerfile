# escape=`
# buildah: buildah 1.28 takes the backslashes of a COPY source as escapes even under "escape=`" (COPY dir\with\backslash.txt looks for dirwithbackslash.txt, a glob fails the same way); BuildKit takes the name literally: the file is written by RUN instead (0644, root, as COPY makes it)
FROM diff/busybox:1
RUN echo one `
    two > /escaped.txt
RUN echo bs > '/dir\with\backslash.txt'
ENV WIN=C:\path\to `
    NEXT=next
LABEL path=C:\dir
