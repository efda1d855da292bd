#include <stdio.h>

int main(int argc, char **argv)
{
        printf("Hello from a multi-stage build: %s\n", argc > 1 ? argv[1] : "no arguments");
        return 0;
}
