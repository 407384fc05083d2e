using Microsoft.Extensions.Logging;

namespace Iommu.Core.Tests.Infrastructure;

/// <summary>A logger factory that keeps the text of every warning (the kernel's WARN_ON) logged through it.</summary>
public sealed class WarningLog : ILoggerFactory
{
    private readonly List<string> _warnings = [];

    public IReadOnlyList<string> Warnings
    {
        get
        {
            lock (_warnings)
            {
                return [.. _warnings];
            }
        }
    }

    public ILogger CreateLogger(string categoryName) => new Sink(this);

    public void AddProvider(ILoggerProvider provider)
    {
    }

    public void Dispose()
    {
    }

    private sealed class Sink(WarningLog owner) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => logLevel >= LogLevel.Warning;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            if (IsEnabled(logLevel))
            {
                lock (owner._warnings)
                {
                    owner._warnings.Add(formatter(state, exception));
                }
            }
        }
    }
}
