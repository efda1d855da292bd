FROM diff/busybox:1
ARG TRIGGER_ARG=parent-arg
ONBUILD ARG TRIGGER_ARG=child-default
ONBUILD RUN echo "trigger ran: $TRIGGER_ARG" > /onbuild.txt
ONBUILD COPY payload /payload/
ONBUILD ENV FROM_TRIGGER=yes
ONBUILD LABEL trigger=label
ONBUILD WORKDIR /triggered
ONBUILD EXPOSE 9000
RUN echo parent > /parent.txt
CMD ["parent-cmd"]
