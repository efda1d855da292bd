# buildah: buildah 1.28 has no heredocs (RUN <<EOF, COPY <<EOF; buildah 1.33 added them): the same steps written out, as BuildKit runs them (a heredoc COPY source is a 0644 root file; ${HOME} in an unquoted COPY heredoc is expanded from the build's ARG/ENV, where HOME is unset)
FROM diff/busybox:1
RUN echo "heredoc line 1" > /heredoc1.txt && echo "heredoc line 2" >> /heredoc1.txt
RUN echo "tabs stripped" > /heredoc2.txt
RUN printf 'key=value\nexpanded=nohome\n' > /etc/heredoc-copy.conf && chmod 0644 /etc/heredoc-copy.conf
RUN printf 'literal=${HOME}\n' > /etc/heredoc-quoted.conf
RUN mkdir /multi && echo "from a" > /multi/A && echo "from b" > /multi/B
RUN echo "written by cat" > /cat-heredoc.txt
